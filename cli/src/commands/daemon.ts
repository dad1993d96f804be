import { Flags } from "@oclif/core";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { DATA_DIR_ENV, DEFAULT_DATA_DIR, DEFAULT_RUNTIME_DIR, QvmError, RUNTIME_DIR_ENV } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { SilentExit, signalExitCode } from "../lib/errors.js";

/** qvmd's bundle: host-agent/dist/qvmd.js in the same checkout as this CLI bundle (cli/dist/qvm.js). */
export function qvmdBundlePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.QVM_QVMD_BUNDLE || decodeURIComponent(new URL("../../host-agent/dist/qvmd.js", import.meta.url).pathname);
}

const FORWARDED: NodeJS.Signals[] = ["SIGTERM", "SIGINT", "SIGHUP"];

export default class Daemon extends QvmCommand {
  static override summary = "Run qvmd, the daemon that owns the domains, in the foreground.";
  static override description = `Runs qvmd (host-agent/dist/qvmd.js, with the same node) with stdin, stdout and stderr passed through, until it exits; qvm then exits with its exit code (128+N if it was killed by signal N). SIGTERM, SIGINT (Ctrl-C) and SIGHUP sent to qvm are passed to qvmd exactly once, so it can stop its domains and exit 0. qvmd serves the admin API on RUNTIME_DIR/qvmd.sock, which every other qvm command uses; point them at a non-default runtime directory with QVM_RUNTIME_DIR.

Set QVM_QVMD_BUNDLE to run another qvmd bundle (development).`;
  static override examples = [
    example("", "As root, with the default directories."),
    example("--data-dir ~/.qvm/data --runtime-dir /tmp/qvm", "A private instance; then: QVM_RUNTIME_DIR=/tmp/qvm qvm ls"),
  ];
  static override flags = {
    // No default here: qvmd resolves it ($QVM_DATA_DIR, else the default), so there is one resolver.
    "data-dir": Flags.string({ description: `Where domains, volumes and state are kept (default: $${DATA_DIR_ENV}, else ${DEFAULT_DATA_DIR}).`, helpValue: "DIR" }),
    "runtime-dir": Flags.string({
      description: `Where the admin socket and per-domain runtime files live (default: $${RUNTIME_DIR_ENV}, else ${DEFAULT_RUNTIME_DIR}).`,
      helpValue: "DIR",
    }),
    "allow-tcg": Flags.boolean({
      description: "Start domains under QEMU's TCG software emulation where there is no KVM (also QVM_ALLOW_TCG=1). TCG gives no hardware isolation, so such starts are refused by default.",
    }),
    "max-running": Flags.integer({ description: "Domains running at once (qvmd's default: 16).", min: 1, helpValue: "N" }),
    "max-guest-memory": Flags.integer({ description: "The running domains' memory together, in MiB (qvmd's default: half the host's RAM).", min: 1, helpValue: "MIB" }),
    "disk-reserve": Flags.integer({ description: "Free space kept on the data disk beyond what running domains' overlays may grow to, in MiB (default 2048).", min: 0, helpValue: "MIB" }),
    "max-dispvms": Flags.integer({ description: "Disposables made for calls at once; 0 turns them off (default 8).", min: 0, helpValue: "N" }),
    "max-dispvms-per-source": Flags.integer({ description: "The same, per calling domain (default 4).", min: 1, helpValue: "N" }),
    "allow-nested-dispvms": Flags.boolean({ description: "Let a disposable's @dispvm calls make disposables (refused by default)." }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Daemon);
    const bundle = qvmdBundlePath();
    if (!existsSync(bundle)) throw new QvmError("MISSING_DEPENDENCY", `qvmd is not built (${bundle} is missing): run \`node scripts/build.mjs\` in the qvm checkout`);
    // The runtime directory is passed on, as the other qvm commands find the socket with the same rule.
    const runtimeDir = flags["runtime-dir"] ?? (process.env[RUNTIME_DIR_ENV] || DEFAULT_RUNTIME_DIR);
    const dataDir = flags["data-dir"] === undefined ? [] : ["--data-dir", flags["data-dir"]];
    // Its own process group: a Ctrl-C on the terminal reaches only qvm, which passes it on once.
    // qvmd's own flags, passed on only when given, so qvmd keeps the one set of defaults.
    const passed = (["max-running", "max-guest-memory", "disk-reserve", "max-dispvms", "max-dispvms-per-source"] as const).flatMap((f) =>
      flags[f] === undefined ? [] : [`--${f}`, String(flags[f])],
    );
    const allowTcg = [...(flags["allow-tcg"] ? ["--allow-tcg"] : []), ...(flags["allow-nested-dispvms"] ? ["--allow-nested-dispvms"] : []), ...passed];
    const child = spawn(process.execPath, [bundle, "--foreground", ...dataDir, "--runtime-dir", runtimeDir, ...allowTcg], {
      stdio: "inherit",
      detached: true,
    });
    const forward = (sig: NodeJS.Signals) => () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    };
    const handlers = FORWARDED.map((sig) => [sig, forward(sig)] as const);
    for (const [sig, fn] of handlers) process.on(sig, fn);
    try {
      const code = await new Promise<number>((resolve, reject) => {
        child.once("error", (err) => reject(new QvmError("INTERNAL", `cannot run qvmd: ${err.message}`)));
        child.once("exit", (code, signal) => resolve(signal ? signalExitCode(signal) : (code ?? 1)));
      });
      if (code !== 0) throw new SilentExit(code);
    } finally {
      for (const [sig, fn] of handlers) process.removeListener(sig, fn);
    }
  }
}
