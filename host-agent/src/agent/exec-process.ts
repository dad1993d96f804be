// Host-side handle of one process running in a domain: stdin is a Writable, stdout and stderr are
// Readables, and `exit` settles with how it ended. Back-pressure runs end to end: a slow reader of
// stdout pauses the gRPC stream (or the data channel), which the guest turns into a paused pipe.
//
// With a data channel (data-channel.ts) the program's stdio travels as frames on a connection of
// its own and the Exec stream carries only started, the helper's own errors and the exit; the
// exit is reported once both have ended, so no output is ever lost behind it.
import type { Socket } from "node:net";
import { Readable, Writable } from "node:stream";
import type { ClientDuplexStream } from "@grpc/grpc-js";
import { QvmError, type agentV1 } from "@qvm/protocol";
import type { ExitSignal } from "@qvm/protocol/contracts";
import { FrameDecoder, FrameError, FrameType, encodeData, encodeFrame } from "@qvm/protocol/qrexec";
import type { DataChannelWait } from "./data-channel.js";
import { StdinWindow, StdinWindowError } from "./stdin-window.js";
import { parseGuestExecResponse } from "./replies.js";
import { agentCallError } from "./grpc-errors.js";

/** After the exit arrives, how long a data channel that never connected is waited for. */
const DATA_GRACE_MS = 3000;

export interface ExecExit {
  code: number | null;
  signal: ExitSignal | null;
}

const STDIN_CHUNK = 64 * 1024;

class GuestOutput extends Readable {
  /** Its end was pushed: later output (a late message from the guest) is dropped. */
  private ended = false;
  constructor(private readonly onWanted: () => void) {
    super({ highWaterMark: 256 * 1024 });
  }
  override _read(): void {
    this.onWanted();
  }
  override push(chunk: Buffer | null): boolean {
    if (this.ended) return true;
    if (chunk === null) this.ended = true;
    return super.push(chunk);
  }
}

export class ExecProcess {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Resolves with the guest's exec id and pid once the process runs. */
  readonly started: Promise<{ execId: number; pid: number }>;
  /** Resolves when the process ends; rejects with a QvmError when the channel breaks. */
  readonly exit: Promise<ExecExit>;
  private execId: number | undefined;
  /** Where stdin goes: the Exec stream, or the data channel once it is connected. */
  private readonly transport: Promise<"grpc" | StdinWindow>;
  private socket: Socket | undefined;

  constructor(
    private readonly call: ClientDuplexStream<agentV1.ExecRequest, agentV1.ExecResponse>,
    start: agentV1.ExecStart,
    socketPath: string,
    data?: DataChannelWait,
  ) {
    const resume = () => {
      call.resume();
      this.socket?.resume();
    };
    this.stdout = new GuestOutput(resume);
    this.stderr = new GuestOutput(resume);
    let chooseTransport!: (t: "grpc" | StdinWindow) => void;
    this.transport = new Promise((res) => (chooseTransport = res));
    this.stdin = new Writable({
      highWaterMark: 256 * 1024,
      write: (chunk: Buffer, _enc, cb) => void this.transport.then((t) => (t === "grpc" ? this.sendStdin(chunk, cb) : t.write(encodeData(FrameType.STDIN, chunk), () => cb()))),
      final: (cb) =>
        void this.transport.then((t) => {
          if (t !== "grpc") return t.write([encodeFrame(FrameType.STDIN)], () => cb());
          if (!call.writableEnded) call.write({ msg: { $case: "closeStdin", value: true } });
          cb();
        }),
    });
    this.stdin.on("error", () => {});

    let resolveStarted!: (v: { execId: number; pid: number }) => void;
    let rejectStarted!: (e: Error) => void;
    this.started = new Promise((res, rej) => ((resolveStarted = res), (rejectStarted = rej)));
    this.started.catch(() => {});

    this.exit = new Promise<ExecExit>((resolve, reject) => {
      let exited: ExecExit | undefined;
      let settled = false;
      let outputsEnded = false;
      /** The data channel is used and has not ended yet: the exit waits for it. */
      let dataOpen = false;
      /** The Exec stream has ended (after the exit: anything later from the guest is a fault). */
      let callDone = false;
      /** The helper's stdin window (ExecStarted.stdin_window; 0: it does not acknowledge). */
      let stdinWindow = 0;
      const endOutputs = () => {
        if (outputsEnded) return;
        outputsEnded = true;
        this.stdout.push(null);
        this.stderr.push(null);
      };
      const settle = () => {
        if (settled || !exited || dataOpen || !callDone) return;
        settled = true;
        endOutputs();
        this.stdin.destroy();
        resolve(exited);
      };
      // The error is reported once, through `exit`; the output streams just end, so a reader that
      // does not listen for errors cannot crash the host.
      const fail = (err: QvmError) => {
        if (settled) return;
        settled = true;
        rejectStarted(err);
        chooseTransport("grpc");
        data?.cancel();
        this.socket?.destroy();
        endOutputs();
        this.stdin.destroy();
        call.cancel();
        reject(err);
      };
      const useDataChannel = (s: Socket) => {
        this.socket = s;
        const sender = new StdinWindow(s, stdinWindow);
        chooseTransport(sender);
        const decoder = new FrameDecoder();
        const open = { stdout: true, stderr: true };
        let dataExit = false;
        s.on("data", (chunk: Buffer) => {
          let frames;
          try {
            frames = decoder.push(chunk);
          } catch (err) {
            return fail(new QvmError("AGENT_PROTOCOL", `the domain's data channel is garbled: ${(err as FrameError).message}`));
          }
          for (const f of frames) {
            if (dataExit) return fail(new QvmError("AGENT_PROTOCOL", "the domain's data channel sent data after its exit"));
            if (f.type === FrameType.EXIT && f.payload.length === 4) {
              dataExit = true;
              continue;
            }
            if (f.type === FrameType.STDIN_ACK && f.payload.length === 4) {
              try {
                sender.ack(f.payload.readUInt32BE(0));
              } catch (err) {
                return fail(new QvmError("AGENT_PROTOCOL", `the domain's data channel ${(err as StdinWindowError).message}`));
              }
              continue;
            }
            const which = f.type === FrameType.STDOUT ? "stdout" : f.type === FrameType.STDERR ? "stderr" : undefined;
            if (!which) return fail(new QvmError("AGENT_PROTOCOL", `the domain's data channel sent a frame of type 0x${f.type.toString(16)}`));
            if (!open[which]) return fail(new QvmError("AGENT_PROTOCOL", `the domain's data channel sent ${which} after its end`));
            if (!f.payload.length) {
              open[which] = false;
              this[which].push(null);
              continue;
            }
            if (!this[which].push(f.payload)) s.pause();
          }
        });
        const ended = () => {
          if (!dataOpen) return;
          dataOpen = false;
          settle();
        };
        s.on("end", ended);
        s.on("close", ended);
        s.on("error", () => {});
        s.resume(); // the listener paused it while reading the cookie
      };
      call.on("data", (res: agentV1.ExecResponse) => {
        if (exited) return fail(new QvmError("AGENT_PROTOCOL", "guest agent sent data after the exit message"));
        let ev;
        try {
          ev = parseGuestExecResponse(res);
        } catch (err) {
          return fail(err as QvmError);
        }
        if (ev.kind === "started") {
          if (this.execId !== undefined) return fail(new QvmError("AGENT_PROTOCOL", "guest agent sent started twice"));
          this.execId = ev.execId;
          resolveStarted({ execId: ev.execId, pid: ev.pid });
          if (ev.dataChannel && data) {
            dataOpen = true;
            stdinWindow = ev.stdinWindow;
            data.socket.then(useDataChannel, () => {
              // Never connected (the helper failed: its error and exit come on the Exec stream).
              chooseTransport("grpc");
              dataOpen = false;
              settle();
            });
          } else {
            data?.cancel();
            chooseTransport("grpc");
          }
          return;
        }
        if (this.execId === undefined) return fail(new QvmError("AGENT_PROTOCOL", `guest agent sent ${ev.kind} before started`));
        if (ev.kind === "exit") {
          exited = { code: ev.code, signal: ev.signal };
          if (!dataOpen) {
            endOutputs();
            this.stdin.destroy();
          } else if (!this.socket) setTimeout(() => data?.cancel(), DATA_GRACE_MS).unref();
          return;
        }
        const target = ev.kind === "stdout" ? this.stdout : this.stderr;
        if (!target.push(ev.data)) call.pause();
      });
      call.on("error", (err) => {
        // A transport error after a valid exit message does not undo the process's result.
        if (exited) {
          callDone = true;
          settle();
        } else fail(agentCallError(err, "Exec", socketPath));
      });
      call.on("end", () => {
        if (settled) return;
        if (exited) {
          callDone = true;
          settle();
        } else fail(new QvmError("AGENT_PROTOCOL", "guest agent ended the Exec stream without an exit status"));
      });
    });
    this.exit.catch(() => {});
    call.write({ msg: { $case: "start", value: start } });
  }

  private sendStdin(chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (this.call.writableEnded || this.call.destroyed) return cb();
    let ok = true;
    for (let off = 0; off < chunk.length; off += STDIN_CHUNK) {
      ok = this.call.write({ msg: { $case: "stdin", value: chunk.subarray(off, off + STDIN_CHUNK) } });
    }
    if (ok) cb();
    else this.call.once("drain", () => cb());
  }

  resize(rows: number, cols: number): void {
    if (!this.call.writableEnded) this.call.write({ msg: { $case: "resize", value: { rows, cols } } });
  }

  /** The guest's exec id, for Signal; undefined until started. */
  get id(): number | undefined {
    return this.execId;
  }

  /** Stops waiting: the agent kills the process when the stream is cancelled. */
  cancel(): void {
    this.socket?.destroy();
    this.call.cancel();
  }
}
