// qvm-shell: the web shell server (`qvm shell` runs it). Prints the URL with its access token in
// the fragment (`http://127.0.0.1:PORT/#token=…`), or writes it to a file only the user can read,
// and serves until SIGTERM or SIGINT.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { AdminClient, adminSocketPath, runtimeDirFromEnv } from "@qvm/protocol";
import { adminClipboard } from "./admin-clipboard.js";
import { AdminEventFeed } from "./admin-events.js";
import { adminWindows } from "./admin-windows.js";
import { startShellServer } from "./server.js";

const USAGE = `usage: qvm-shell [--host 127.0.0.1|::1|localhost] [--port N] [--url-file FILE]
Serves the qvm web shell on loopback. The URL it prints carries the access token in its
fragment (#token=...); with --url-file it is written to FILE (mode 0600) instead of printed.`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { host: { type: "string" }, port: { type: "string" }, "url-file": { type: "string" }, help: { type: "boolean", short: "h" } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be 0..65535, not ${JSON.stringify(values.port)}`);
  const admin = new AdminClient(adminSocketPath(runtimeDirFromEnv()));
  await admin.getDaemonInfo({}, { timeoutMs: 3000 }).catch((err: Error) => {
    throw new Error(`qvmd does not answer on ${admin.socketPath} (${err.message}): start it with \`qvm daemon\``);
  });
  const webDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "web");
  const log = (m: string) => process.stderr.write(`qvm shell: ${m}\n`);
  // The window list and the clipboard's state follow one feed of qvmd's events.
  const feed = new AdminEventFeed(admin);
  const server = await startShellServer({ admin, webDir, host: values.host, port, log, windows: adminWindows(admin, log, feed), clipboard: adminClipboard(admin, feed) });
  if (values["url-file"]) {
    writeFileSync(values["url-file"], `${server.url}\n`, { mode: 0o600 });
    process.stderr.write(`qvm shell: serving on port ${server.port}; the URL is in ${values["url-file"]}\n`);
  } else {
    process.stdout.write(`${server.url}\n`);
  }
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await server.close();
  admin.close();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`qvm shell: ${err.message}\n`);
    process.exit(1);
  },
);
