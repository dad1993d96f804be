import { Flags } from "@oclif/core";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { SilentExit, signalExitCode } from "../lib/errors.js";

/** The web shell's server bundle: gui-proxy/dist/qvm-shell.js in the same checkout as this CLI. */
export function shellBundlePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.QVM_SHELL_BUNDLE || decodeURIComponent(new URL("../../gui-proxy/dist/qvm-shell.js", import.meta.url).pathname);
}

export default class Shell extends QvmCommand {
  static override summary = "Serve the web shell: every domain's terminals in the browser, with their labels.";
  static override description = `Serves a local web page (loopback only) listing the domains with their label colors and states, with buttons to start, stop and pause them and windows holding a terminal (a shell as the domain's default user, or the serial console). Each window's frame and title are drawn by the page from qvmd's data, in the domain's label color; nothing a domain sends can change them.

The printed URL carries a random access token made at start, in its fragment (#token=…), which the browser never sends to a server: the page offers it on its WebSocket, which is refused without it. Open it in a browser on this machine. With --url-file the URL is written to a file only you can read instead. Runs until Ctrl-C.`;
  static override examples = [example("", "Prints http://127.0.0.1:PORT/#token=…"), example("--port 8022 --url-file ~/.qvm-shell-url")];
  static override flags = {
    port: Flags.integer({ description: "TCP port on 127.0.0.1 (default: a free one).", min: 0, max: 65535 }),
    host: Flags.string({ description: "Loopback address to listen on.", options: ["127.0.0.1", "::1", "localhost"], default: "127.0.0.1" }),
    "url-file": Flags.string({ description: "Write the URL (with its token) to this file, mode 0600, instead of printing it.", helpValue: "FILE" }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Shell);
    const bundle = shellBundlePath();
    if (!existsSync(bundle)) throw new QvmError("MISSING_DEPENDENCY", `the web shell is not built (${bundle} is missing): run \`node scripts/build.mjs\` in the qvm checkout`);
    const args = [bundle, "--host", flags.host];
    if (flags.port !== undefined) args.push("--port", String(flags.port));
    if (flags["url-file"]) args.push("--url-file", flags["url-file"]);
    const child = spawn(process.execPath, args, { stdio: "inherit" });
    const stop = () => child.kill("SIGTERM");
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    const code = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new QvmError("INTERNAL", `cannot run the web shell: ${err.message}`)));
      child.once("exit", (c, signal) => resolve(signal ? signalExitCode(signal) : (c ?? 1)));
    });
    if (code !== 0) throw new SilentExit(code);
  }
}
