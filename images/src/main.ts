// qvm-images: builds what domains boot into the content-addressed image store.
import { parseArgs } from "node:util";
import { isQvmError } from "@qvm/protocol";
import { ImageStore, defaultImagesDir } from "./store.js";
import { buildKernelBundle } from "./kernel.js";
import { buildTemplate, DEFAULT_TEMPLATES, TEMPLATES } from "./template.js";
import { terminalProgress } from "./progress.js";
import { ImageIntegrity } from "./integrity.js";

const HELP = `Usage: qvm-images <command> [options]

Builds the kernel bundle and template images that domains boot. Builds are cached by the hash of
their inputs: running a build again does nothing unless an input changed.

Commands:
  build [all]              build the kernel bundle and the templates (${DEFAULT_TEMPLATES.join(", ")})
  build kernel             build the kernel bundle (Debian linux-image-amd64 + qvm initramfs)
  build template NAME      build one template (${Object.keys(TEMPLATES).join(", ")})
  list                     show what is built
  verify                   hash every file of every kernel bundle and template image and compare it
                           with its manifest (qvmd also checks what a domain boots, before it boots);
                           exits 1 when a file differs or is missing

Options:
  --images-dir DIR   image store (default: $QVM_IMAGES_DIR or $QVM_DATA_DIR/images or /var/lib/qvm/images)
  --force            rebuild even when nothing changed
  --json             machine-readable output (list, verify)
  -h, --help         this help

Examples:
  qvm-images build
  qvm-images build template debian-12 --force
  qvm-images build template debian-12-gui    (built only when named)
  qvm-images list --json
  qvm-images verify
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "images-dir": { type: "string" },
      force: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const store = new ImageStore(values["images-dir"] ?? defaultImagesDir());
  const progress = terminalProgress();
  const [cmd, what = "all", name] = positionals;
  if (cmd === "build") {
    if (what === "kernel" || what === "all") await buildKernelBundle(store, progress, { force: values.force });
    if (what === "template") {
      if (!name) throw usage("build template needs a NAME");
      await buildTemplate(store, name, progress, { force: values.force });
    } else if (what === "all") {
      for (const t of DEFAULT_TEMPLATES) await buildTemplate(store, t, progress, { force: values.force });
    } else if (what !== "kernel") {
      throw usage(`unknown build target "${what}"`);
    }
    return 0;
  }
  if (cmd === "list") {
    const items: Array<Record<string, unknown>> = [];
    try {
      const k = store.kernel();
      items.push({ kind: "kernel", name: k.manifest.kernelRelease, hash: k.manifest.hash, builtAt: k.manifest.builtAt, dir: k.dir });
    } catch {
      // not built
    }
    for (const t of store.listTemplates()) items.push({ kind: "template", name: t.manifest.name, hash: t.manifest.hash, builtAt: t.manifest.builtAt, dir: t.dir });
    if (values.json) process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
    else if (!items.length) process.stdout.write(`nothing built in ${store.root}: run \`qvm-images build\`\n`);
    else for (const i of items) process.stdout.write(`${String(i.kind).padEnd(9)} ${String(i.name).padEnd(20)} ${i.hash}  ${i.builtAt}\n`);
    return 0;
  }
  if (cmd === "verify") {
    const reports = await new ImageIntegrity(store).verifyAll((file) => {
      if (!values.json) process.stderr.write(`qvm-images: hashing ${file}\n`);
    });
    const bad = reports.flatMap((r) => r.files.filter((f) => f.result === "mismatch" || f.result === "missing"));
    if (values.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
    else if (!reports.length) process.stdout.write(`nothing built in ${store.root}: run \`qvm-images build\`\n`);
    else {
      for (const r of reports) {
        for (const f of r.files) {
          const what = { ok: "ok", mismatch: "CHANGED (does not match its manifest)", missing: "MISSING", unrecorded: "not checked (no digest recorded: rebuild with --force)" }[f.result];
          process.stdout.write(`${r.kind.padEnd(9)} ${r.name.padEnd(20)} ${f.key.padEnd(8)} ${what}  ${f.path}\n`);
        }
      }
      if (bad.length) process.stdout.write(`${bad.length} file(s) changed or missing: rebuild them (\`qvm-images build ... --force\`) or restore them; domains refuse to boot from them\n`);
    }
    return bad.length ? 1 : 0;
  }
  throw usage(`unknown command "${cmd}"`);
}

class UsageError extends Error {}
const usage = (m: string) => new UsageError(m);

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof UsageError || (err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      process.stderr.write(`qvm-images: ${err.message}\nRun \`qvm-images --help\` for usage.\n`);
      process.exit(2);
    }
    process.stderr.write(`qvm-images: ${isQvmError(err) ? err.message : (err as Error).stack}\n`);
    process.exit(isQvmError(err) ? err.exitCode : 1);
  },
);
