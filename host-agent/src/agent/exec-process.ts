// Host-side handle of one process running in a domain: stdin is a Writable, stdout and stderr are
// Readables, and `exit` settles with how it ended. Back-pressure runs end to end: a slow reader of
// stdout pauses the gRPC stream, which the agent turns into a paused pipe in the guest.
import { Readable, Writable } from "node:stream";
import type { ClientDuplexStream } from "@grpc/grpc-js";
import { QvmError, type agentV1 } from "@qvm/protocol";
import type { ExitSignal } from "@qvm/protocol/contracts";
import { parseGuestExecResponse } from "./replies.js";
import { agentCallError } from "./grpc-errors.js";

export interface ExecExit {
  code: number | null;
  signal: ExitSignal | null;
}

const STDIN_CHUNK = 64 * 1024;

class GuestOutput extends Readable {
  constructor(private readonly onWanted: () => void) {
    super({ highWaterMark: 256 * 1024 });
  }
  override _read(): void {
    this.onWanted();
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

  constructor(
    private readonly call: ClientDuplexStream<agentV1.ExecRequest, agentV1.ExecResponse>,
    start: agentV1.ExecStart,
    socketPath: string,
  ) {
    const resume = () => call.resume();
    this.stdout = new GuestOutput(resume);
    this.stderr = new GuestOutput(resume);
    this.stdin = new Writable({
      highWaterMark: 256 * 1024,
      write: (chunk: Buffer, _enc, cb) => this.sendStdin(chunk, cb),
      final: (cb) => {
        if (!call.writableEnded) call.write({ msg: { $case: "closeStdin", value: true } });
        cb();
      },
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
      const endOutputs = () => {
        if (outputsEnded) return;
        outputsEnded = true;
        this.stdout.push(null);
        this.stderr.push(null);
      };
      // The error is reported once, through `exit`; the output streams just end, so a reader that
      // does not listen for errors cannot crash the host.
      const fail = (err: QvmError) => {
        if (settled) return;
        settled = true;
        rejectStarted(err);
        endOutputs();
        this.stdin.destroy();
        call.cancel();
        reject(err);
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
          return;
        }
        if (this.execId === undefined) return fail(new QvmError("AGENT_PROTOCOL", `guest agent sent ${ev.kind} before started`));
        if (ev.kind === "exit") {
          exited = { code: ev.code, signal: ev.signal };
          endOutputs();
          this.stdin.destroy();
          return;
        }
        const target = ev.kind === "stdout" ? this.stdout : this.stderr;
        if (!target.push(ev.data)) call.pause();
      });
      call.on("error", (err) => {
        // A transport error after a valid exit message does not undo the process's result.
        if (exited && !settled) {
          settled = true;
          resolve(exited);
        } else {
          fail(agentCallError(err, "Exec", socketPath));
        }
      });
      call.on("end", () => {
        if (settled) return;
        if (exited) {
          settled = true;
          resolve(exited);
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
    this.call.cancel();
  }
}
