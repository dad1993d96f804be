// `qvm console`: the domain's serial console on our terminal until Ctrl-] or the end of the stream.
// The output is passed raw, escape sequences included (no EscapeFilter, unlike `qvm run` without
// a pty): the console is a terminal session with the domain, as Qubes' is (docs/cli.md).
import type { adminV1 } from "@qvm/protocol";

/** Ctrl-] (GS, 0x1d), as in telnet and virsh console. */
export const DETACH_BYTE = 0x1d;

export interface ConsoleCall {
  write(msg: adminV1.ConsoleRequest): boolean;
  end(): void;
  cancel(): void;
  pause(): unknown;
  resume(): unknown;
  on(event: "data", fn: (res: adminV1.ConsoleResponse) => void): unknown;
  on(event: "end", fn: () => void): unknown;
  on(event: "error", fn: (err: Error) => void): unknown;
  once(event: "drain", fn: () => void): unknown;
}

export type ConsoleEnd = "detached" | "closed";

/**
 * Passes stdin to the console and the console to stdout. Resolves "detached" when the user
 * types Ctrl-] (the bytes before it are still sent), "closed" when qvmd ends the stream.
 */
export function attachConsole(
  call: ConsoleCall,
  domain: string,
  io: { stdin: NodeJS.ReadableStream; stdout: NodeJS.WritableStream },
  mapError: (err: unknown) => Error,
): Promise<ConsoleEnd> {
  return new Promise<ConsoleEnd>((resolve, reject) => {
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      io.stdin.removeListener("data", onData);
      io.stdin.removeListener("end", onEnd);
      io.stdin.pause();
      fn();
    };
    const onData = (chunk: Buffer | string) => {
      const data = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      const at = data.indexOf(DETACH_BYTE);
      const input = at === -1 ? data : data.subarray(0, at);
      if (input.length && !call.write({ msg: { $case: "input", value: input } })) {
        io.stdin.pause();
        call.once("drain", () => !done && io.stdin.resume());
      }
      if (at !== -1) {
        finish(() => resolve("detached"));
        call.end();
        call.cancel();
      }
    };
    // End of our input (a pipe): stop sending, keep showing output until qvmd closes.
    const onEnd = () => call.end();
    call.on("data", (res) => {
      if (done || !res.output.length) return;
      if (!io.stdout.write(res.output)) {
        call.pause();
        io.stdout.once("drain", () => call.resume());
      }
    });
    call.on("end", () => finish(() => resolve("closed")));
    call.on("error", (err) => finish(() => reject(mapError(err))));
    call.write({ msg: { $case: "start", value: { domain } } });
    io.stdin.on("data", onData);
    io.stdin.on("end", onEnd);
    io.stdin.resume();
  });
}
