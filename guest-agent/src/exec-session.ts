// One process started through Exec: spawns it (optionally on a pty through the qvm-pty helper),
// streams its output with back-pressure, and reports how it ended.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import type { Duplex, Readable } from "node:stream";
import type { agentV1 } from "@qvm/protocol";

type ExecStart = agentV1.ExecStart;
type ExecResponse = agentV1.ExecResponse;
import { lookupUser } from "./users.js";
import { MAX_ARGV_ITEMS, MAX_ENV_ITEMS, MAX_OUTPUT_CHUNK_BYTES } from "./limits.js";

export const PTY_HELPER = process.env.QVM_PTY_HELPER ?? "/usr/lib/qvm/qvm-pty";
/** Carries a program's stdio over a connection of its own (guest-agent/native/qvm-exec-data.c). */
export const DATA_HELPER = process.env.QVM_EXEC_DATA_HELPER ?? "/usr/lib/qvm/qvm-exec-data";
const dataHelperPresent = existsSync(DATA_HELPER);
/**
 * Stdin payload bytes the host may have in flight to DATA_HELPER before an ack (STDIN_ACK). Half
 * the guest's default vsock receive buffer (256 KiB), so that buffer never fills: when it did,
 * vhost-device-vsock stopped forwarding the other direction and the connection stalled for good
 * (docs/agent-protocol.md, "Data channel"). The helper acknowledges every frame it writes.
 */
export const DATA_STDIN_WINDOW = 128 * 1024;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export class ExecRequestError extends Error {}

export interface ExecSink {
  /** Sends one response; returns false when the transport wants the sender to wait for drain. */
  send(res: ExecResponse): boolean;
  onDrain(cb: () => void): void;
}

interface Command {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdio goes over the data channel: the program runs under DATA_HELPER. */
  dataChannel: boolean;
}

/**
 * Where qvm-exec-data connects: the host (vsock CID 2) on the port the request names. Tests
 * without vsock set QVM_EXEC_DATA_ADDRESS to `unix:PATH`.
 */
function dataAddress(start: ExecStart): string | undefined {
  if (!start.dataPort || start.pty || start.dataCookie.length !== 16 || !dataHelperPresent) return undefined;
  const transport = process.env.QVM_EXEC_DATA_ADDRESS ?? `vsock:${start.dataPort}`;
  return `${transport}:${Buffer.from(start.dataCookie).toString("hex")}`;
}

export function buildCommand(start: ExecStart, lookup = lookupUser): Command {
  const hasArgv = start.argv.length > 0;
  const hasShell = start.shellCommand.length > 0;
  if (hasArgv === hasShell) throw new ExecRequestError("exactly one of argv or shell_command must be set");
  if (start.argv.length > MAX_ARGV_ITEMS) throw new ExecRequestError(`argv has more than ${MAX_ARGV_ITEMS} items`);
  if (Object.keys(start.env).length > MAX_ENV_ITEMS) throw new ExecRequestError(`env has more than ${MAX_ENV_ITEMS} items`);
  const userName = start.user || "root";
  const user = lookup(userName);
  if (!user) throw new ExecRequestError(`no such user in the domain: ${userName}`);

  let argv = hasArgv ? [...start.argv] : ["/bin/sh", "-c", start.shellCommand];
  const data = dataAddress(start);
  if (data) argv = [DATA_HELPER, ...argv];
  if (user.uid !== 0) {
    // setpriv (util-linux) drops to the user with its supplementary groups; Node's spawn can set
    // uid/gid but not supplementary groups.
    argv = ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--", ...argv];
  }
  if (start.pty) {
    const rows = start.window?.rows || 24;
    const cols = start.window?.cols || 80;
    argv = [PTY_HELPER, String(rows), String(cols), ...argv];
  }
  const env: NodeJS.ProcessEnv = {
    PATH: DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    ...(start.pty ? { TERM: "xterm-256color" } : {}),
    ...start.env,
    // Read and removed by the helper: the program never sees it.
    ...(data ? { QVM_EXEC_DATA: data } : {}),
  };
  return { file: argv[0]!, args: argv.slice(1), env, cwd: start.cwd || user.home, dataChannel: data !== undefined };
}

export class ExecSession {
  readonly child: ChildProcess;
  /** The pid of the program itself (behind the pty helper when there is one). */
  programPid: number | undefined;
  private readonly control: Duplex | undefined;
  private readonly dataChannel: boolean;
  private finished = false;

  constructor(
    readonly id: number,
    start: ExecStart,
    private readonly sink: ExecSink,
    private readonly onFinished: () => void,
  ) {
    const cmd = buildCommand(start);
    this.dataChannel = cmd.dataChannel;
    // Both helpers report the program's pid on fd 3; the pty helper also takes resizes there.
    const helper = start.pty || cmd.dataChannel;
    this.child = spawn(cmd.file, cmd.args, {
      cwd: cmd.cwd,
      env: cmd.env,
      stdio: cmd.dataChannel ? ["ignore", "ignore", "pipe", "pipe"] : helper ? ["pipe", "pipe", "pipe", "pipe"] : ["pipe", "pipe", "pipe"],
    });
    this.control = helper ? (this.child.stdio[3] as Duplex) : undefined;
    this.programPid = helper ? undefined : this.child.pid;

    this.child.stdin?.on("error", () => {}); // EPIPE when the program exits before reading stdin
    if (this.child.stdout) this.pump(this.child.stdout, "stdout");
    this.pump(this.child.stderr!, "stderr");
    this.control?.on("data", (d: Buffer) => {
      const m = /^pid (\d+)$/m.exec(d.toString("latin1"));
      if (m) this.programPid = Number(m[1]);
    });
    this.control?.on("error", () => {});

    this.child.once("error", (err: NodeJS.ErrnoException) => {
      const code = err.code === "ENOENT" ? 127 : 126;
      this.sink.send({ msg: { $case: "stderr", value: Buffer.from(`qvm-agent: cannot run ${cmd.file}: ${err.message}\n`) } });
      this.finish({ code, signal: "" });
    });
    this.child.once("close", (code, signal) => this.finish({ code: code ?? -1, signal: signal ?? "" }));
  }

  started(): void {
    this.sink.send({ msg: { $case: "started", value: { execId: this.id, pid: this.child.pid ?? 0, dataChannel: this.dataChannel, stdinWindow: this.dataChannel ? DATA_STDIN_WINDOW : 0 } } });
  }

  /** Returns false when the program's stdin is full: wait for onStdinDrain. */
  writeStdin(data: Buffer): boolean {
    const stdin = this.child.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) return true;
    return stdin.write(data);
  }

  onStdinDrain(cb: () => void): void {
    this.child.stdin?.once("drain", cb);
  }

  closeStdin(): void {
    this.child.stdin?.end();
  }

  resize(rows: number, cols: number): void {
    if (!this.control || this.dataChannel || rows < 1 || cols < 1 || rows > 9999 || cols > 9999) return;
    this.control.write(`${rows} ${cols}\n`);
  }

  signal(sig: NodeJS.Signals): void {
    const pid = this.programPid ?? this.child.pid;
    if (pid === undefined || this.finished) return;
    try {
      process.kill(pid, sig);
    } catch {
      // Already gone: the exit message is on its way.
    }
  }

  /** The caller went away: nobody will read the output, so the process is ended. */
  abort(): void {
    if (this.finished) return;
    this.signal("SIGKILL");
    this.child.kill("SIGKILL");
  }

  private pump(stream: Readable, which: "stdout" | "stderr"): void {
    stream.on("data", (chunk: Buffer) => {
      for (let off = 0; off < chunk.length; off += MAX_OUTPUT_CHUNK_BYTES) {
        const part = chunk.subarray(off, off + MAX_OUTPUT_CHUNK_BYTES);
        const value = which === "stdout" ? { $case: "stdout" as const, value: part } : { $case: "stderr" as const, value: part };
        if (!this.sink.send({ msg: value })) {
          stream.pause();
          this.sink.onDrain(() => stream.resume());
        }
      }
    });
  }

  private finish(exit: { code: number; signal: string }): void {
    if (this.finished) return;
    this.finished = true;
    this.sink.send({ msg: { $case: "exit", value: exit.signal ? { code: -1, signal: exit.signal } : { code: exit.code, signal: "" } } });
    this.onFinished();
  }
}
