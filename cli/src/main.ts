// The qvm CLI's entry point, bundled to cli/dist/qvm.cjs (node scripts/build.mjs cli), started
// by the loader cli/dist/qvm.js (cli/src/loader.ts) that the ./qvm wrapper runs. oclif loads the
// command table (COMMANDS) from this same bundle: cli/package.json names it as the explicit
// command target, with the cli directory as oclif's root, and the loader has registered it in
// require.cache, so oclif gets this instance.
//
// Every failure ends here: one line on stderr ("qvm: ..."), exit code from lib/errors.ts.
// QVM_DEBUG=1 adds the stack of unexpected errors (and oclif's debug output).
import { run, settings } from "@oclif/core";
import { outcomeOf } from "./lib/errors.js";
import { protectRunHelp } from "./lib/run-args.js";

export { COMMANDS } from "./index.js";

function flush(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => (stream.writableLength ? stream.write("", () => resolve()) : resolve()));
}

async function main(argv: string[]): Promise<void> {
  // A bundle: no TypeScript sources to look for, no user or dev plugins to load.
  settings.enableAutoTranspile = false;
  const root = decodeURIComponent(new URL("..", import.meta.url).pathname);
  // `qvm ls | head -1`: a closed pipe is the reader's choice, not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => process.exit(err.code === "EPIPE" ? (process.exitCode ?? 0) : 1));
  let code = 0;
  try {
    await run(protectRunHelp(argv), { root, userPlugins: false, devPlugins: false });
    code = Number(process.exitCode ?? 0);
  } catch (err) {
    const o = outcomeOf(err);
    if (o.message) process.stderr.write(`qvm: ${o.message}\n`);
    if (o.stack && process.env.QVM_DEBUG) process.stderr.write(`${o.stack}\n`);
    code = o.exitCode;
  }
  await Promise.all([flush(process.stdout), flush(process.stderr)]);
  // Exit now: an idle gRPC channel or a paused stdin must not keep qvm alive.
  process.exit(code);
}

// oclif requires this bundle again to read COMMANDS and gets the loaded instance; should the file
// ever be evaluated a second time, that must not start a second run.
const g = globalThis as { __qvmMainStarted?: boolean };
if (!g.__qvmMainStarted) {
  g.__qvmMainStarted = true;
  void main(process.argv.slice(2));
}
