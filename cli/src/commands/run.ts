import { Args, Flags } from "@oclif/core";
import { QvmError, isValidServiceCall } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { SilentExit, processExitCode } from "../lib/errors.js";
import { execStart, wantPty } from "../lib/exec-request.js";
import { escapeFiltering } from "../lib/escape-filter.js";
import { ExecSession } from "../lib/exec-session.js";
import { parseAssignments, splitRunArgv, type RunCommandSpec } from "../lib/run-args.js";
import { enterRawMode, windowSize } from "../lib/terminal.js";

/** Ctrl-C this many times gives up on the process (it may still run in the domain). */
const ABANDON_AFTER_SIGINTS = 3;

export default class Run extends QvmCommand {
  static override summary = "Run a command in a domain (starting the domain if it is halted).";
  static override description = `Like qvm-run. qvm's flags go before the VM name; everything after it is the command:

  qvm run VM -- PROG ARG...   PROG with exactly these arguments (no shell)
  qvm run VM PROG ARG...      the same, when there are several words
  qvm run VM 'CMD | CMD'      one word, no --: a shell command (/bin/sh -c)

A single word is a shell command, as qvm-run takes one command string.

The process runs as the domain's default_user unless --user is given. A halted domain is started first unless --no-autostart is given.

With --pass-io (-p), qvm's stdin is passed to the process and its stdout and stderr to qvm's, and qvm exits with the process's exit code (128+N when it was killed by signal N). When stdin is a terminal the process gets a pty: the terminal is put in raw mode (restored on exit) and window size changes are passed on; --no-pty turns that off, --pty forces one.

Without --pass-io, the process's stdin is closed at once and its output is discarded, but qvm still waits for it and exits with its exit code.

Escape sequences: when qvm's stdout or stderr is a terminal and the process has no pty, the domain's output to it is filtered, as Qubes' qvm-run does: escape sequences (CSI, OSC such as a clipboard write, DCS, ...) are removed, and other control characters but tab, newline and carriage return are shown as "_" (so are non-ASCII characters when the locale is not UTF-8). A domain cannot then write the clipboard, retitle the window, or make the terminal type a reply. --no-filter-escape-chars turns this off; --filter-escape-chars filters even when the output is not a terminal, and then no pty is made unless --pty is given. With a pty nothing is filtered: an interactive program draws with escape sequences (line editing, an editor, colors), so that is a terminal session with the domain, as over ssh, and the domain's output is the terminal's to interpret.

Without a pty, Ctrl-C (SIGINT), SIGTERM and SIGHUP sent to qvm are passed to the process; pressing Ctrl-C ${ABANDON_AFTER_SIGINTS} times makes qvm give up waiting (exit 130) while the process may still run. With a pty, Ctrl-C is simply a key the process reads.

With --service, the word after VM is a qrexec service (SERVICE or SERVICE+ARG), run as the admin domain (dom0) calling it, as Qubes' qvm-run --service does: no policy applies, the service sees QREXEC_REMOTE_DOMAIN=dom0, and its input and output are passed (--pass-io is implied). Exit code 127: the domain has no such service.

If the command's own arguments include --help or -h, qvm puts the -- in for you: qvm run work git --help runs git --help.`;
  static override usage = ["[-p] [-u USER] [-n] [--[no-]pty] [--[no-]filter-escape-chars] [-e NAME=VALUE]... [--cwd DIR] VM -- PROG [ARG...]", "--dispvm[=NAME] [FLAGS] [--] PROG [ARG...]", "[FLAGS] VM PROG ARG...", "[FLAGS] VM 'SHELL COMMAND'"];
  static override examples = [
    example("work -- ls -l /home", "argv, no shell."),
    example("-p work 'ls /etc | wc -l'", "A shell command, output passed back."),
    example("-p work bash", "An interactive shell (a pty when stdin is a terminal)."),
    example("-p --no-pty work -- cat < file > copy", "Pipe a file through."),
    example("-p --no-filter-escape-chars work -- ls --color=always", "Let the domain's colors reach the terminal."),
    example("-u root -n work -- apt-get update", "As root; fail if work is halted."),
    example("--dispvm=default-dvm -p -- sh -c 'echo hi'", "In a throwaway disposable, gone afterwards."),
    example("--service vault qubes.GetDate", "Call a qrexec service in vault as dom0."),
    example("--gui work -- foot", "A Wayland program in a window of its own, shown in the web shell."),
    example("--gui --dispvm -- foot", "A window from a new disposable, destroyed when its last window closes."),
  ];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "The domain to run the command in.", required: true }),
    command: Args.string({ description: "The command: a shell command (one word) or PROG ARG... (several words, or after --).", required: true }),
  };
  static override flags = {
    "pass-io": Flags.boolean({ char: "p", description: "Pass stdin, stdout and stderr between qvm and the process, and exit with its exit code." }),
    user: Flags.string({ char: "u", description: "Run as this user (default: the domain's default_user).", helpValue: "USER" }),
    "no-autostart": Flags.boolean({ char: "n", description: "Fail instead of starting a halted domain." }),
    pty: Flags.boolean({ allowNo: true, description: "Use a pty (default: with --pass-io when stdin is a terminal)." }),
    "filter-escape-chars": Flags.boolean({
      allowNo: true,
      description: "Filter terminal escape sequences and control characters from the domain's output (default: for each of stdout and stderr that is a terminal, when there is no pty). --no-filter-escape-chars lets them through.",
    }),
    env: Flags.string({ char: "e", description: "Set an environment variable for the process; repeatable.", multiple: true, multipleNonGreedy: true, helpValue: "NAME=VALUE" }),
    cwd: Flags.string({ description: "Working directory of the process (default: the user's home).", helpValue: "DIR" }),
    service: Flags.boolean({ description: "The command is a qrexec service name (SERVICE or SERVICE+ARG) to call in VM as dom0; implies --pass-io." }),
    dispvm: Flags.string({
      description: "Run in a disposable of this template for disposables (`--dispvm` alone: the global default_dispvm) instead of in VM: one of those it keeps preloaded (its preload-dispvm-max feature) when one is ready, else a new one; it is destroyed afterwards, whatever happens.",
      helpValue: "[=NAME]",
    }),
    gui: Flags.boolean({ description: "Run a Wayland program in a window of its own, shown in the web shell (`qvm shell`) in a frame with the domain's label; returns once the program runs." }),
    geometry: Flags.string({ description: "The window's size with --gui (default 1024x768).", helpValue: "WxH" }),
  };

  async run(): Promise<void> {
    const split = splitRunArgv(this.argv);
    // Only qvm's flags go to the parser; the VM and the command were split off above.
    const { flags } = await this.parse({ flags: Run.flags, args: {}, strict: true }, split.flags);
    if (flags.gui) return this.runGui(split, flags);
    const service = flags.service ? serviceName(split.command) : undefined;
    const passIo = Boolean(flags["pass-io"]) || service !== undefined;
    if (flags.pty && !passIo) throw new QvmError("INVALID_ARGUMENT", "--pty needs --pass-io");
    if (flags.pty && service) throw new QvmError("INVALID_ARGUMENT", "a service gets no pty: drop --pty");
    const filterFlag = flags["filter-escape-chars"];
    if (flags.pty && filterFlag) {
      throw new QvmError("INVALID_ARGUMENT", "a pty's output is a terminal session and is not filtered: drop --filter-escape-chars, or use --no-pty");
    }
    // Asking for filtering means no automatic pty (the pty's output could not be filtered).
    const pty = !service && wantPty({ passIo, pty: flags.pty ?? (filterFlag ? false : undefined), stdinIsTTY: Boolean(process.stdin.isTTY) });
    const filterEscapes = escapeFiltering({ flag: filterFlag, pty, stdoutIsTTY: Boolean(process.stdout.isTTY), stderrIsTTY: Boolean(process.stderr.isTTY) });
    const start = execStart({
      vm: split.vm,
      command: split.command,
      user: flags.user,
      env: parseAssignments(flags.env, "--env"),
      cwd: flags.cwd,
      pty,
      window: pty ? windowSize() : undefined,
      noAutostart: Boolean(flags["no-autostart"]),
      dispvm: flags.dispvm,
      service,
    });

    const admin = await this.connected();
    const call = admin.exec();
    const session = new ExecSession(call, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, {
      passIo,
      mapError: (err) => admin.errorOf(err),
      filterEscapes,
    });

    const restoreTerminal = pty ? enterRawMode() : () => {};
    let sigints = 0;
    const handlers: [NodeJS.Signals, () => void][] = [
      [
        "SIGINT",
        () => {
          if (++sigints >= ABANDON_AFTER_SIGINTS) {
            restoreTerminal();
            call.cancel();
            this.note(`gave up waiting for the process in ${split.vm || "the disposable"}; it may still be running`);
            process.exit(130);
          }
          session.signal("SIGINT");
        },
      ],
      ["SIGTERM", () => session.signal("SIGTERM")],
      ["SIGHUP", () => session.signal("SIGHUP")],
      ["SIGWINCH", () => pty && session.resize(windowSize().rows, windowSize().cols)],
    ];
    for (const [sig, fn] of handlers) process.on(sig, fn);
    let code: number;
    try {
      code = processExitCode(await session.run(start));
    } finally {
      for (const [sig, fn] of handlers) process.removeListener(sig, fn);
      restoreTerminal();
    }
    if (code !== 0) throw new SilentExit(code);
  }
  /** --gui: the program in a window of its own (docs/gui.md); no terminal I/O. */
  private async runGui(split: { vm: string; command: RunCommandSpec }, flags: { geometry?: string; dispvm?: string; "no-autostart"?: boolean; "pass-io"?: boolean; user?: string; service?: boolean }): Promise<void> {
    if (flags["pass-io"] || flags.service || flags.user) throw new QvmError("INVALID_ARGUMENT", "--gui runs the program as the domain's default_user with no terminal: drop --pass-io, --service and --user");
    const argv = split.command.kind === "argv" ? split.command.argv : ["sh", "-c", split.command.command];
    if (!argv.length) throw new QvmError("INVALID_ARGUMENT", "--gui needs a program: qvm run --gui VM -- PROGRAM [ARGS...]");
    let width = 0;
    let height = 0;
    if (flags.geometry) {
      const m = /^(\d{2,4})x(\d{2,4})$/.exec(flags.geometry);
      if (!m) throw new QvmError("INVALID_ARGUMENT", `--geometry must be WIDTHxHEIGHT, like 1024x768, not ${JSON.stringify(flags.geometry)}`);
      width = Number(m[1]);
      height = Number(m[2]);
    }
    const admin = await this.admin();
    const { window } = await admin.openWindow({ domain: split.vm, dispvm: flags.dispvm ?? "", argv, width, height, noAutostart: Boolean(flags["no-autostart"]) });
    const disposable = flags.dispvm !== undefined ? " (a disposable: destroyed when its last window closes)" : "";
    this.log(`window ${window!.windowId} of ${window!.domain}${disposable}: ${window!.program} (${window!.width}x${window!.height}); it shows in the web shell (\`qvm shell\`)`);
  }

}

/** The service of `qvm run --service VM SERVICE[+ARG]`: exactly one word. */
function serviceName(command: RunCommandSpec): string {
  const words = command.kind === "argv" ? command.argv : [command.command];
  if (words.length !== 1 || !isValidServiceCall(words[0]!)) {
    throw new QvmError("INVALID_ARGUMENT", `--service takes one service name, SERVICE or SERVICE+ARG (letters, digits, "_", "." and "-"), not ${JSON.stringify(words.join(" "))}`);
  }
  return words[0]!;

}
