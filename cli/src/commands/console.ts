import { Args } from "@oclif/core";
import { QvmCommand, example } from "../base.js";
import { attachConsole } from "../lib/console-session.js";
import { enterRawMode } from "../lib/terminal.js";

export default class Console extends QvmCommand {
  static override summary = "Attach the terminal to a domain's serial console; Ctrl-] detaches.";
  static override description = `Like qvm-console-dispvm, for the serial console (kernel messages, a login prompt). When stdin is a terminal it is put in raw mode, so every key goes to the domain, and restored on exit; Ctrl-] detaches and qvm exits 0, leaving the domain running. A one-line hint is printed to stderr on start. qvm also exits 0 when qvmd closes the console (the domain stopped).

The console is a raw terminal, as Qubes' is: the domain's output, escape sequences included, reaches the terminal unfiltered (a login shell and full-screen programs need them), unlike qvm run without a pty. Attach to an untrusted domain's console only from a terminal that ignores clipboard writes (OSC 52) and report requests.`;
  static override examples = [example("work")];
  static override args = { vm: Args.string({ description: "The domain.", required: true }) };

  async run(): Promise<void> {
    const { args } = await this.parse(Console);
    const admin = await this.connected();
    const call = admin.console();
    this.note(`console of ${args.vm}; press Ctrl-] to detach`);
    const restore = enterRawMode();
    let cancelled = false;
    const detach = () => {
      cancelled = true;
      call.cancel();
    };
    process.on("SIGTERM", detach);
    process.on("SIGHUP", detach);
    try {
      const how = await attachConsole(call, args.vm, { stdin: process.stdin, stdout: process.stdout }, (err) => admin.errorOf(err)).catch((err: unknown) => {
        // Our own cancel (SIGTERM, SIGHUP) is a detach, not an error.
        if (cancelled) return "detached" as const;
        throw err;
      });
      restore();
      // On a terminal the cursor may be mid-line after the console's output.
      process.stderr.write(`${process.stderr.isTTY ? "\r\n" : ""}qvm: ${how === "detached" ? "detached from" : "qvmd closed"} the console of ${args.vm}\n`);
    } finally {
      restore();
      process.removeListener("SIGTERM", detach);
      process.removeListener("SIGHUP", detach);
    }
  }
}
