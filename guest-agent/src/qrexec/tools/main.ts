// The in-domain qrexec tools, one bundle (guest-agent/dist/qvm-qrexec.cjs) behind small wrappers
// in the template's /usr/bin and /etc/qubes-rpc: `node qvm-qrexec.cjs TOOL ARGS...`.
//   qrexec-client-vm, qvm-copy, qvm-move, qvm-copy-to-vm, qvm-move-to-vm, qvm-open-in-vm,
//   qvm-open-in-dvm (callers); filecopy-receive, open-receive (the services' bodies).
import { spawn } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { isDomainNameShaped } from "@qvm/protocol/contracts";
import { callService, type CallIo } from "../client.js";
import { FilecopyError, packPaths, quoteText, unpackStream } from "../filecopy/index.js";
import { MAX_OPEN_FILE_BYTES, OpenError, looksLikeUrl, receiveFile, receiveUrl, urlProblem } from "./open.js";
import { connectHost } from "./transport.js";

const USAGE: Record<string, string> = {
  "qrexec-client-vm": `usage: qrexec-client-vm TARGET SERVICE[+ARG] [LOCAL_PROGRAM [ARG...]]
Calls a qrexec service. TARGET is a domain name, @default (let the policy or a prompt decide),
@dispvm or @dispvm:NAME. The host's policy decides; this side learns only whether the call was
refused (exit 126). Without LOCAL_PROGRAM, stdin and stdout are the service's; with it, the
program (started only once the call is accepted) talks to the service on its stdin and stdout.
Exit code: the service's (127: the target has no such service), or the local program's.`,
  "qvm-copy": "usage: qvm-copy FILE|DIR...\nCopies files to another domain, chosen at the host's prompt; they land in ~/QubesIncoming/<this domain>/ there.",
  "qvm-move": "usage: qvm-move FILE|DIR...\nLike qvm-copy, then removes the files here once the copy succeeded.",
  "qvm-copy-to-vm": "usage: qvm-copy-to-vm TARGET FILE|DIR...\nCopies files to TARGET (the policy may still ask).",
  "qvm-move-to-vm": "usage: qvm-move-to-vm TARGET FILE|DIR...\nLike qvm-copy-to-vm, then removes the files here.",
  "qvm-open-in-vm": "usage: qvm-open-in-vm TARGET FILE|URL\nOpens a file (a copy is sent, at most 1 GiB) or a URL (http, https or ftp only) in TARGET.",
  "qvm-open-in-dvm": "usage: qvm-open-in-dvm FILE|URL\nOpens a file or URL (http, https or ftp only) in a new disposable.",
};

/** What the Filecopy receiver answers after the stream: "ok" or "error: MESSAGE". */
const REPLY_OK = "ok";
const MAX_REPLY = 4096;

class Usage extends Error {}

function die(tool: string, msg: string, code = 1): never {
  process.stderr.write(`${tool}: ${msg}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<number> {
  const [tool, ...args] = argv;
  if (!tool) throw new Usage(`usage: qvm-qrexec TOOL ARGS... (tools: ${Object.keys(USAGE).join(", ")})`);
  if (USAGE[tool] && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(`${USAGE[tool]}\n`);
    return 0;
  }
  switch (tool) {
    case "qrexec-client-vm":
      return clientVm(args);
    case "qvm-copy":
    case "qvm-move":
      return copy(tool, "@default", args, tool === "qvm-move");
    case "qvm-copy-to-vm":
    case "qvm-move-to-vm":
      if (args.length < 2) throw new Usage(USAGE[tool]!);
      return copy(tool, args[0]!, args.slice(1), tool === "qvm-move-to-vm");
    case "qvm-open-in-vm":
      if (args.length !== 2) throw new Usage(USAGE[tool]!);
      return open(tool, args[0]!, args[1]!);
    case "qvm-open-in-dvm":
      if (args.length !== 1) throw new Usage(USAGE[tool]!);
      return open(tool, "@dispvm", args[0]!);
    case "filecopy-receive":
      return filecopyReceive();
    case "open-receive":
      return openReceive(args[0] === "url");
    default:
      throw new Usage(`unknown tool ${JSON.stringify(tool)}; tools: ${Object.keys(USAGE).join(", ")}`);
  }
}

function splitService(full: string): { service: string; argument: string } {
  const i = full.indexOf("+");
  return i < 0 ? { service: full, argument: "" } : { service: full.slice(0, i), argument: full.slice(i + 1) };
}

async function clientVm(args: string[]): Promise<number> {
  if (args.length < 2) throw new Usage(USAGE["qrexec-client-vm"]!);
  const [target, full, program, ...programArgs] = args as [string, string, string | undefined, ...string[]];
  const { service, argument } = splitService(full);
  if (!program) {
    const out = await callService(connectHost(), { target, service, argument }, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    if (!out.accepted) process.stderr.write("Request refused\n");
    return out.code;
  }
  let local: Promise<number> = Promise.resolve(1);
  const out = await callService(connectHost(), { target, service, argument }, () => {
    const child = spawn(program, programArgs, { stdio: ["pipe", "pipe", "inherit"] });
    local = new Promise((r) => {
      child.once("error", (err) => {
        process.stderr.write(`qrexec-client-vm: cannot run ${program}: ${err.message}\n`);
        r(127);
      });
      child.once("close", (code, sig) => r(code ?? 128 + (sig ? (os.constants.signals[sig] ?? 0) : 0)));
    });
    child.stdin.on("error", () => {});
    return { stdin: child.stdout, stdout: child.stdin, stderr: process.stderr };
  });
  if (!out.accepted) {
    process.stderr.write("Request refused\n");
    return out.code;
  }
  return local;
}

async function copy(tool: string, target: string, paths: string[], move: boolean): Promise<number> {
  if (!paths.length) throw new Usage(USAGE[tool]!);
  for (const p of paths) if (!existsSync(p)) die(tool, `${p}: no such file or directory`);
  const stream = new PassThrough();
  const reply: Buffer[] = [];
  let replyBytes = 0;
  const stdout = new Writable({
    write(chunk: Buffer, _e, cb) {
      if (replyBytes < MAX_REPLY) reply.push(chunk.subarray(0, MAX_REPLY - replyBytes));
      replyBytes += chunk.length;
      cb();
    },
  });
  let packError: Error | undefined;
  const io: CallIo = { stdin: stream, stdout, stderr: process.stderr };
  const call = callService(connectHost(), { target, service: "qubes.Filecopy", argument: "" }, () => {
    packPaths(paths, stream).then(
      () => stream.end(),
      (err: Error) => {
        packError = err;
        // With the error, so the call sends EOF (a plain destroy() would leave the receiver
        // waiting for the rest of the stream forever); the receiver then refuses the truncated copy.
        stream.destroy(err);
      },
    );
    return io;
  });
  const out = await call;
  if (!out.accepted) die(tool, "the copy was refused (by the policy, or at the prompt)", 126);
  if (packError) die(tool, packError.message);
  const text = Buffer.concat(reply).toString("utf8").trim();
  if (out.code !== 0 || text !== REPLY_OK) die(tool, `the copy failed in the target: ${text.replace(/^error: /, "") || `exit ${out.code}`}`);
  if (move) for (const p of paths) rmSync(p, { recursive: true, force: true });
  return 0;
}

/** qubes.Filecopy: the stream lands in ~/QubesIncoming/<caller>/. */
async function filecopyReceive(): Promise<number> {
  const source = process.env.QREXEC_REMOTE_DOMAIN ?? "";
  if (!isDomainNameShaped(source)) {
    process.stdout.write("error: the caller's name is missing or invalid\n");
    return 1;
  }
  const incoming = path.join(os.homedir(), "QubesIncoming");
  mkdirSync(incoming, { recursive: true, mode: 0o700 });
  try {
    // The service's stderr reaches the caller, so success is silent. The default byte cap
    // (DEFAULT_MAX_COPY_BYTES) applies; modes lose group and world write, and our umask's bits.
    await unpackStream(process.stdin, path.join(incoming, source), { maxFiles: 100_000, umask: processUmask() });
    process.stdout.write(`${REPLY_OK}\n`);
    return 0;
  } catch (err) {
    const msg = err instanceof FilecopyError ? err.message : `internal error: ${(err as Error).message}`;
    process.stdout.write(`error: ${msg.replace(/\n/g, " ")}\n`);
    return 1;
  }
}

/** This process's umask, read without changing it (process.umask() with no argument sets it twice). */
function processUmask(): number {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return parseInt(m[1]!, 8);
  } catch {
    // no /proc: assume the usual one
  }
  return 0o022;
}

/** qvm-open-in-vm: a URL goes as a line to qubes.OpenURL; a file as "name\n" + contents to qubes.OpenInVM. */
async function open(tool: string, target: string, what: string): Promise<number> {
  const isUrl = looksLikeUrl(what);
  if (isUrl) {
    // Checked here too, so the user learns why at once; the target checks again (open.ts).
    const problem = urlProblem(what);
    if (problem) die(tool, problem);
  } else {
    if (!(existsSync(what) && statSync(what).isFile())) die(tool, `${quoteText(what)}: neither a URL (scheme://…) nor a file`);
    if (statSync(what).size > MAX_OPEN_FILE_BYTES) die(tool, `${quoteText(what)} is larger than ${MAX_OPEN_FILE_BYTES} bytes, the most qubes.OpenInVM takes`);
  }
  const stdin = new PassThrough();
  if (isUrl) stdin.end(`${what}\n`);
  else {
    stdin.write(`${path.basename(what)}\n`);
    createReadStream(what).pipe(stdin);
  }
  const out = await callService(connectHost(), { target, service: isUrl ? "qubes.OpenURL" : "qubes.OpenInVM", argument: "" }, { stdin, stdout: process.stdout, stderr: process.stderr });
  if (!out.accepted) die(tool, "refused (by the policy, or at the prompt)", 126);
  return out.code;
}

/** qubes.OpenURL / qubes.OpenInVM: check what came (bounded: see open.ts), then hand it to the domain's opener. */
async function openReceive(url: boolean): Promise<number> {
  const service = url ? "qubes.OpenURL" : "qubes.OpenInVM";
  let target: string;
  try {
    target = url ? await receiveUrl(process.stdin) : await receiveFile(process.stdin);
  } catch (err) {
    if (!(err instanceof OpenError)) throw err;
    process.stderr.write(`${service}: ${err.message}\n`);
    return 1;
  }
  // Domains have no desktop yet: QVM_OPENER (set by the domain's owner), else xdg-open.
  const opener = process.env.QVM_OPENER || "xdg-open";
  return new Promise((resolve) => {
    const child = spawn(opener, [target], { stdio: ["ignore", "ignore", "inherit"] });
    child.once("error", () => {
      process.stderr.write(`${service}: no application to open it with (${opener} is missing); ${url ? "" : `the file is at ${target}`}\n`);
      resolve(1);
    });
    child.once("close", (code) => resolve(code ?? 1));
  });
}

/**
 * Exits once stdout has taken everything written to it: on a pipe or socket Node writes
 * asynchronously, and exiting at once cut the tail off long replies (an updates-proxy download).
 */
function exitAfterFlush(code: number): void {
  process.stdout.write("", () => process.exit(code));
}

main(process.argv.slice(2)).then(
  (code) => exitAfterFlush(code),
  (err: Error) => {
    if (err instanceof Usage) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`qvm-qrexec: ${err.message}\n`);
    process.exit(1);
  },
);
