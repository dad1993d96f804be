// One `qvm run` process over the admin Exec stream: start it, pass stdin/stdout/stderr with
// back-pressure both ways, forward signals and window sizes, and return its exit status.
import type { adminV1 } from "@qvm/protocol";
import type { ExecSignal } from "@qvm/protocol/contracts";
import { EscapeFilter } from "./escape-filter.js";

/** The part of grpc-js's ClientDuplexStream the session uses (tests pass a fake). */
export interface ExecCall {
  write(msg: adminV1.ExecRequest): boolean;
  end(): void;
  cancel(): void;
  pause(): unknown;
  resume(): unknown;
  on(event: "data", fn: (res: adminV1.ExecResponse) => void): unknown;
  on(event: "end", fn: () => void): unknown;
  on(event: "error", fn: (err: Error) => void): unknown;
  once(event: "drain", fn: () => void): unknown;
}

export interface ExecIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface ExecSessionOptions {
  /** Pass stdin to the process and its output to ours; otherwise stdin is closed and output dropped. */
  passIo: boolean;
  /** Turns a stream error into the error to report (fromGrpcError). */
  mapError: (err: unknown) => Error;
  /**
   * Which output streams go through an EscapeFilter (escape-filter.ts) before they are written:
   * `qvm run` sets this for a stream that is a terminal, unless a pty was asked for. `utf8`:
   * whether the terminal reads UTF-8 (default: the locale).
   */
  filterEscapes?: { stdout: boolean; stderr: boolean; utf8?: boolean };
}

export interface ExecExitStatus {
  code: number;
  signal: string;
}

export class ExecSession {
  private exit: ExecExitStatus | undefined;
  private stdinDone = false;
  private ended = false;
  private readonly onStdinData = (chunk: Buffer | string) => {
    const data = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (!this.call.write({ msg: { $case: "stdin", value: data } })) {
      this.io.stdin.pause();
      this.call.once("drain", () => {
        if (!this.stdinDone) this.io.stdin.resume();
      });
    }
  };
  private readonly onStdinEnd = () => {
    if (this.stdinDone) return;
    this.stopStdin();
    this.call.write({ msg: { $case: "closeStdin", value: true } });
  };

  constructor(
    private readonly call: ExecCall,
    private readonly io: ExecIo,
    private readonly opts: ExecSessionOptions,
  ) {}

  /** Runs the process to its end. Rejects with the mapped error if the stream fails first. */
  run(start: adminV1.ExecStart): Promise<ExecExitStatus> {
    return new Promise<ExecExitStatus>((resolve, reject) => {
      let pausedFor = 0;
      const f = this.opts.filterEscapes;
      const filters = new Map<NodeJS.WritableStream, EscapeFilter>();
      if (f?.stdout) filters.set(this.io.stdout, new EscapeFilter({ utf8: f.utf8 }));
      if (f?.stderr) filters.set(this.io.stderr, new EscapeFilter({ utf8: f.utf8 }));
      const out = (stream: NodeJS.WritableStream, raw: Buffer) => {
        if (!this.opts.passIo || this.exit) return;
        const data = filters.get(stream)?.push(raw) ?? raw;
        if (!data.length) return;
        if (!stream.write(data)) {
          // Stop reading from qvmd until our output drains: back-pressure to the guest.
          if (pausedFor++ === 0) this.call.pause();
          stream.once("drain", () => {
            if (--pausedFor === 0) this.call.resume();
          });
        }
      };
      this.call.on("data", (res) => {
        const m = res.msg;
        if (!m) return;
        switch (m.$case) {
          case "started":
            if (this.opts.passIo) this.startStdin();
            else this.onStdinEnd();
            break;
          case "stdout":
            out(this.io.stdout, m.value);
            break;
          case "stderr":
            out(this.io.stderr, m.value);
            break;
          case "exit":
            // What the filters held back (half a UTF-8 character) goes out before the end.
            for (const [stream, filter] of filters) {
              const rest = filter.end();
              if (this.opts.passIo && rest.length) stream.write(rest);
            }
            this.exit = m.value;
            this.stopStdin();
            break;
        }
      });
      this.call.on("end", () => {
        this.ended = true;
        this.stopStdin();
        if (this.exit) resolve(this.exit);
        else reject(this.opts.mapError(new Error("qvmd ended the exec stream without the process's exit status")));
      });
      this.call.on("error", (err) => {
        this.stopStdin();
        if (this.exit) resolve(this.exit);
        else reject(this.opts.mapError(err));
      });
      this.call.write({ msg: { $case: "start", value: start } });
    });
  }

  /** Forwards a signal ("SIGINT") to the process; ignored once it has exited. */
  signal(name: ExecSignal): void {
    if (this.exit || this.ended) return;
    this.call.write({ msg: { $case: "signal", value: name } });
  }

  resize(rows: number, cols: number): void {
    if (this.exit || this.ended) return;
    this.call.write({ msg: { $case: "resize", value: { rows, cols } } });
  }

  get exited(): boolean {
    return this.exit !== undefined;
  }

  private startStdin(): void {
    if (this.stdinDone) return;
    this.io.stdin.on("data", this.onStdinData);
    this.io.stdin.on("end", this.onStdinEnd);
    this.io.stdin.resume();
  }

  private stopStdin(): void {
    if (this.stdinDone) return;
    this.stdinDone = true;
    this.io.stdin.removeListener("data", this.onStdinData);
    this.io.stdin.removeListener("end", this.onStdinEnd);
    this.io.stdin.pause();
  }
}
