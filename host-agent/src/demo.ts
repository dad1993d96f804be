// qvm-demo: the whole path in one program, without the daemon. Boots a domain from the built
// kernel bundle and template, runs a command through the guest agent, prints its output and
// shuts the domain down. Usage: qvm-demo [--template NAME] [-- COMMAND...]
import path from "node:path";
import { isQvmError } from "@qvm/protocol";
import { ImageStore, defaultImagesDir } from "@qvm/images";
import { DomainVm } from "./domain/domain-vm.js";
import { QemuDriver } from "./vmm/qemu/qemu-driver.js";

async function main(argv: string[]): Promise<number> {
  const dd = argv.indexOf("--");
  const command = dd >= 0 ? argv.slice(dd + 1) : ["uname", "-a"];
  const tIdx = argv.indexOf("--template");
  const template = tIdx >= 0 && tIdx < (dd < 0 ? argv.length : dd) ? argv[tIdx + 1]! : "debian-12";
  const dataDir = process.env.QVM_DATA_DIR ?? "/var/lib/qvm";
  const runtimeDir = process.env.QVM_RUNTIME_DIR ?? "/run/qvm";
  const store = new ImageStore(defaultImagesDir());
  const log = (m: string) => process.stderr.write(`qvm-demo: ${m}\n`);

  const t0 = Date.now();
  log(`booting domain "demo" from template ${template}`);
  const dom = await DomainVm.start({
    name: "demo",
    driver: new QemuDriver({ log }),
    kernel: store.kernel(),
    rootImage: store.template(template).root,
    runtimeDir: path.join(runtimeDir, "domains", "demo"),
    logDir: path.join(dataDir, "logs", "demo"),
  });
  try {
    const info = await dom.agent.getInfo();
    log(`agent answered after ${((Date.now() - t0) / 1000).toFixed(1)} s (guest kernel ${info.kernelRelease}); running: ${command.join(" ")}`);
    const proc = dom.agent.exec({ command });
    proc.stdin.end();
    proc.stdout.pipe(process.stdout);
    proc.stderr.pipe(process.stderr);
    const exit = await proc.exit;
    return exit.code ?? 128;
  } finally {
    const exit = await dom.shutdown();
    log(`domain stopped: ${exit.reason}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`qvm-demo: ${isQvmError(err) ? err.message : (err as Error).stack}\n`);
    process.exit(1);
  },
);
