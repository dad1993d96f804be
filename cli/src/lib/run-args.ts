// How `qvm run` reads its command line. Like qvm-run, everything from the first word after the
// VM name on is the command, not options of qvm (so `qvm run work ls -l` runs `ls -l`):
//   qvm run [FLAGS] VM -- PROG ARG...   argv, exactly as given
//   qvm run [FLAGS] VM PROG ARG...      argv (several words)
//   qvm run [FLAGS] VM 'CMD | LINE'     one word: a shell command, run as /bin/sh -c 'CMD | LINE'
// qvm's own flags go before the VM name.
import { QvmError } from "@qvm/protocol/contracts";

export type RunCommandSpec = { kind: "argv"; argv: string[] } | { kind: "shell"; command: string };

export interface SplitRunArgs {
  /** qvm's flags, for the parser. */
  flags: string[];
  /** "" with --dispvm: the command runs in a new disposable, not in a named domain. */
  vm: string;
  command: RunCommandSpec;
}

/** `--dispvm` alone means the global default_dispvm; `--dispvm=NAME` names a template for disposables. */
const isDispvmFlag = (a: string) => a === "--dispvm" || a.startsWith("--dispvm=");

/** Long and short flags of `qvm run` that take a value (so their value is not the VM name). */
const VALUE_FLAGS = new Set(["-u", "--user", "-e", "--env", "--cwd", "--geometry"]);

/** Help flags: oclif's --help plus -h (cli/package.json: additionalHelpFlags), as Qubes' tools take it. */
export const HELP_FLAGS = ["--help", "-h"];

/** Index of the VM name in `qvm run`'s arguments (after qvm's flags), or argv.length if none. */
function vmIndex(argv: readonly string[]): number {
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--" || !a.startsWith("-") || a === "-") break;
    if (VALUE_FLAGS.has(a)) i++;
  }
  return i;
}

/**
 * `qvm run VM PROG --help` must run `PROG --help`, not print qvm's help: oclif looks for help flags
 * anywhere before a "--", so put a "--" after the VM name when the command has one. A help flag
 * before the VM name still asks for `qvm run`'s help. `argv` is the whole command line ("run", ...).
 */
export function protectRunHelp(argv: readonly string[]): string[] {
  if (argv[0] !== "run") return [...argv];
  const i = 1 + vmIndex(argv.slice(1));
  if (i >= argv.length || argv[i] === "--") return [...argv];
  const rest = argv.slice(i + 1);
  if (rest[0] === "--" || !rest.some((a) => HELP_FLAGS.includes(a))) return [...argv];
  return [...argv.slice(0, i + 1), "--", ...rest];
}

export function splitRunArgv(argv: readonly string[]): SplitRunArgs {
  let i = vmIndex(argv);
  const flags = argv.slice(0, Math.min(i, argv.length)).map((a) => (a === "--dispvm" ? "--dispvm=@default" : a));
  const disposable = flags.some(isDispvmFlag);
  if (argv[i] === "--" && !disposable) i++;
  // With --dispvm there is no VM name: the command starts right after qvm's flags.
  const vm = disposable ? "" : argv[i];
  if (vm === undefined) throw new QvmError("INVALID_ARGUMENT", "missing VM name: qvm run [FLAGS] VM [--] COMMAND...");
  let rest = argv.slice(disposable ? i : i + 1);
  let dashdash = false;
  if (rest[0] === "--") {
    dashdash = true;
    rest = rest.slice(1);
  }
  if (rest.length === 0) throw new QvmError("INVALID_ARGUMENT", `missing command to run in ${vm || "the disposable"}: qvm run [FLAGS] VM [--] COMMAND...`);
  const command: RunCommandSpec =
    rest.length === 1 && !dashdash ? { kind: "shell", command: rest[0]! } : { kind: "argv", argv: rest };
  return { flags, vm, command };
}

/** NAME=VALUE pairs (`--prop`, `--env`) as an object; a pair without "=" is a usage error. */
export function parseAssignments(pairs: readonly string[] | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const eq = p.indexOf("=");
    if (eq <= 0) throw new QvmError("INVALID_ARGUMENT", `${what} must be NAME=VALUE, got ${JSON.stringify(p)}`);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}
