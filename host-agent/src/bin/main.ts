// qvmd: the host daemon. `qvmd --foreground --data-dir DIR --runtime-dir DIR` (what
// `qvm daemon` and the systemd unit run). Logs go to stderr, one line each (the journal adds
// timestamps under systemd).
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_DATA_DIR, QvmError, isQvmError, runtimeDirFromEnv } from "@qvm/protocol";
import { defaultLimits } from "../domain/admission.js";
import { startDaemon } from "./daemon.js";

const DEFAULTS = defaultLimits();

const USAGE = `usage: qvmd --foreground [--data-dir DIR] [--runtime-dir DIR] [--images-dir DIR]
            [--ask-timeout SECONDS] [--max-qrexec-calls N] [--allow-tcg] [--admin-group GROUP]
            [--max-running N] [--max-guest-memory MIB] [--disk-reserve MIB]
            [--max-dispvms N] [--max-dispvms-per-source N] [--allow-nested-dispvms]

Runs the qvm host daemon until SIGTERM or SIGINT. Domains keep running when it exits; the next
qvmd re-attaches to them.
  --data-dir DIR     domain store, logs, images (default $QVM_DATA_DIR or ${DEFAULT_DATA_DIR})
  --runtime-dir DIR  admin socket and per-domain sockets (default $QVM_RUNTIME_DIR or /run/qvm)
  --images-dir DIR   built kernels and templates (default $QVM_IMAGES_DIR or DATA/images)
  --ask-timeout SECONDS     how long a qrexec "ask" waits for an answer before denying (60)
  --max-qrexec-calls N      qrexec calls one domain may hold at once; more are dropped (16)
  --admin-group GROUP  members of GROUP may use the admin socket, that is \`qvm\` (default qvm)
  --allow-tcg        start domains under QEMU's TCG software emulation when there is no KVM
                     (also QVM_ALLOW_TCG=1). TCG gives no hardware isolation: QEMU does not treat
                     it as a security boundary, so by default such starts are refused
Limits (a start beyond one fails with RESOURCE_EXHAUSTED naming it):
  --max-running N           domains running at once (${DEFAULTS.maxRunning})
  --max-guest-memory MIB    the running domains' memory together (${DEFAULTS.maxGuestMemoryMiB}: this host's RAM less a
                            reserve and each running domain's VMM overhead)
  --disk-reserve MIB        free space kept on the data directory's disk beyond what running
                            domains' overlays may still grow to (${DEFAULTS.diskReserveMiB})
  --max-dispvms N           disposables made for calls (qvm run --dispvm, qrexec @dispvm) at once;
                            0 turns them off (${DEFAULTS.maxDispvms})
  --max-dispvms-per-source N  the same, per calling domain; the admin counts as dom0 (${DEFAULTS.maxDispvmsPerSource})
  --allow-nested-dispvms    let a disposable's @dispvm calls make disposables (refused by default,
                            so that no domain can multiply itself)`;

function wholeNumber(flag: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === "" || !Number.isInteger(n) || n < min || n > max) throw new QvmError("INVALID_ARGUMENT", `${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return n;
}

function positiveInt(flag: string, text: string | undefined): number | undefined {
  return wholeNumber(flag, text, 1, 100_000);
}

/** Up to 64 TiB, in MiB. */
const MAX_MIB = 64 * 1024 * 1024;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      foreground: { type: "boolean", default: false },
      "data-dir": { type: "string" },
      "runtime-dir": { type: "string" },
      "images-dir": { type: "string" },
      "ask-timeout": { type: "string" },
      "max-qrexec-calls": { type: "string" },
      "allow-tcg": { type: "boolean", default: false },
      "admin-group": { type: "string" },
      "max-running": { type: "string" },
      "max-guest-memory": { type: "string" },
      "disk-reserve": { type: "string" },
      "max-dispvms": { type: "string" },
      "max-dispvms-per-source": { type: "string" },
      "allow-nested-dispvms": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!values.foreground) {
    process.stderr.write(`qvmd: only --foreground is supported (run it under systemd for a service)\n${USAGE}\n`);
    return 2;
  }
  const dataDir = path.resolve(values["data-dir"] ?? process.env.QVM_DATA_DIR ?? DEFAULT_DATA_DIR);
  const runtimeDir = path.resolve(values["runtime-dir"] ?? runtimeDirFromEnv());
  const imagesDir = path.resolve(values["images-dir"] ?? process.env.QVM_IMAGES_DIR ?? path.join(dataDir, "images"));
  const log = (m: string) => process.stderr.write(`qvmd: ${m}\n`);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const askTimeout = positiveInt("--ask-timeout", values["ask-timeout"]);
  const qrexec = { askTimeoutMs: askTimeout && askTimeout * 1000, maxCallsPerDomain: positiveInt("--max-qrexec-calls", values["max-qrexec-calls"]) };
  const allowTcg = values["allow-tcg"] || process.env.QVM_ALLOW_TCG === "1";
  const adminGroup = values["admin-group"];
  if (adminGroup !== undefined && !/^[a-z_][a-z0-9_-]{0,31}$/.test(adminGroup)) {
    process.stderr.write(`qvmd: --admin-group must be a group name (letters, digits, _ and -, up to 32), not ${JSON.stringify(adminGroup)}\n`);
    return 2;
  }
  if (allowTcg) log("TCG allowed (--allow-tcg or QVM_ALLOW_TCG=1): domains without KVM run with no hardware isolation");
  const limits = {
    maxRunning: positiveInt("--max-running", values["max-running"]),
    maxGuestMemoryMiB: wholeNumber("--max-guest-memory", values["max-guest-memory"], 128, MAX_MIB),
    diskReserveMiB: wholeNumber("--disk-reserve", values["disk-reserve"], 0, MAX_MIB),
    maxDispvms: wholeNumber("--max-dispvms", values["max-dispvms"], 0, 100_000),
    maxDispvmsPerSource: wholeNumber("--max-dispvms-per-source", values["max-dispvms-per-source"], 0, 100_000),
    nestedDispvms: values["allow-nested-dispvms"] || undefined,
  };
  const daemon = await startDaemon({ dataDir, runtimeDir, imagesDir, peerCredHelper: path.join(here, "qvm-peercred"), adminGroup, tapOpenHelper: path.join(here, "qvm-tap-open"), qmpAddFdHelper: path.join(here, "qvm-qmp-add-fd"), log, qrexec, allowTcg, limits });
  process.title = "qvmd";
  return new Promise((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: leaving domains running and exiting`);
      daemon.stop().then(
        () => resolve(0),
        (err: Error) => {
          log(`error while stopping: ${err.message}`);
          resolve(1);
        },
      );
    };
    // Repeated signals (a second Ctrl-C, `qvm daemon` forwarding) must not cut the detach short.
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) return;
      stopping = true;
      stop(sig);
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
    // A daemon has no terminal to lose: SIGHUP (e.g. forwarded by `qvm daemon`) stops it cleanly too.
    process.on("SIGHUP", () => onSignal("SIGHUP"));
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`qvmd: ${isQvmError(err) ? err.message : (err as Error).stack}\n`);
    process.exit(isQvmError(err) ? err.exitCode : 1);
  },
);
