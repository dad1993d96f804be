import { EventEmitter } from "node:events";
import { PassThrough, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { adminV1 } from "@qvm/protocol";
import { ExecSession, type ExecCall } from "./exec-session.js";
import { DETACH_BYTE, attachConsole, type ConsoleCall } from "./console-session.js";

/** A stand-in for grpc-js's duplex: records writes, and says "full" while `full` is set. */
class FakeCall<Req> extends EventEmitter {
  written: Req[] = [];
  full = false;
  paused = false;
  ended = false;
  cancelled = false;
  write(msg: Req): boolean {
    this.written.push(msg);
    return !this.full;
  }
  end(): void {
    this.ended = true;
  }
  cancel(): void {
    this.cancelled = true;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  reply(res: unknown): void {
    this.emit("data", res);
  }
}

/** A writable that reports "full" until drained by hand. */
class SlowSink extends Writable {
  chunks: Buffer[] = [];
  full = false;
  override write(chunk: string | Uint8Array): boolean {
    this.chunks.push(Buffer.from(chunk));
    return !this.full;
  }
}

const start: adminV1.ExecStart = { domain: "work", argv: ["cat"], shellCommand: "", env: {}, cwd: "", user: "", pty: false, window: undefined, noAutostart: false, dispvm: "", service: "" };
const cases = (c: FakeCall<adminV1.ExecRequest>) => c.written.map((w) => w.msg?.$case);
const tick = () => new Promise((r) => setImmediate(r));

function setup(passIo: boolean, filterEscapes?: { stdout: boolean; stderr: boolean; utf8?: boolean }) {
  const call = new FakeCall<adminV1.ExecRequest>();
  const stdin = new PassThrough();
  const stdout = new SlowSink();
  const stderr = new SlowSink();
  const session = new ExecSession(call as unknown as ExecCall, { stdin, stdout, stderr }, { passIo, mapError: (e) => new Error(`mapped: ${(e as Error).message}`), filterEscapes });
  return { call, stdin, stdout, stderr, session, done: session.run(start) };
}

describe("ExecSession", () => {
  it("with --pass-io: start, then stdin after started, closeStdin at end of input, output passed, exit status returned", async () => {
    const { call, stdin, stdout, stderr, done } = setup(true);
    expect(call.written[0]).toEqual({ msg: { $case: "start", value: start } });
    stdin.write("early");
    await tick();
    expect(cases(call)).toEqual(["start"]); // stdin waits for the process to exist
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    await tick();
    stdin.end("more");
    await tick();
    expect(cases(call)).toEqual(["start", "stdin", "stdin", "closeStdin"]);
    expect(Buffer.concat(call.written.slice(1, 3).map((w) => w.msg!.value as Buffer)).toString()).toBe("earlymore");
    call.reply({ msg: { $case: "stdout", value: Buffer.from("out") } });
    call.reply({ msg: { $case: "stderr", value: Buffer.from("err") } });
    call.reply({ msg: { $case: "exit", value: { code: 3, signal: "" } } });
    call.emit("end");
    expect(await done).toEqual({ code: 3, signal: "" });
    expect(Buffer.concat(stdout.chunks).toString()).toBe("out");
    expect(Buffer.concat(stderr.chunks).toString()).toBe("err");
  });

  it("without --pass-io: closes stdin at once and drops the output, but still returns the exit status", async () => {
    const { call, stdin, stdout, done } = setup(false);
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    stdin.write("ignored");
    await tick();
    expect(cases(call)).toEqual(["start", "closeStdin"]);
    call.reply({ msg: { $case: "stdout", value: Buffer.from("dropped") } });
    call.reply({ msg: { $case: "exit", value: { code: 0, signal: "SIGKILL" } } });
    call.emit("end");
    expect(await done).toEqual({ code: 0, signal: "SIGKILL" });
    expect(stdout.chunks).toEqual([]);
  });

  it("stops reading stdin while the stream is full, until it drains", async () => {
    const { call, stdin } = setup(true);
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    call.full = true;
    stdin.write("a");
    await tick();
    expect(stdin.isPaused()).toBe(true);
    call.full = false;
    call.emit("drain");
    expect(stdin.isPaused()).toBe(false);
  });

  it("stops reading the stream while our stdout is full, until it drains", async () => {
    const { call, stdout } = setup(true);
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    stdout.full = true;
    call.reply({ msg: { $case: "stdout", value: Buffer.from("x") } });
    expect(call.paused).toBe(true);
    stdout.emit("drain");
    expect(call.paused).toBe(false);
  });

  it("forwards signals and window sizes while the process runs, not after", async () => {
    const { call, session, done } = setup(true);
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    session.signal("SIGINT");
    session.resize(40, 100);
    expect(call.written.slice(-2)).toEqual([{ msg: { $case: "signal", value: "SIGINT" } }, { msg: { $case: "resize", value: { rows: 40, cols: 100 } } }]);
    call.reply({ msg: { $case: "exit", value: { code: 130, signal: "" } } });
    session.signal("SIGTERM");
    expect(call.written.at(-1)?.msg?.$case).toBe("resize");
    call.emit("end");
    await done;
  });

  it("rejects with the mapped error when the stream fails or ends without an exit status", async () => {
    const a = setup(true);
    a.call.emit("error", new Error("boom"));
    await expect(a.done).rejects.toThrow("mapped: boom");
    const b = setup(true);
    b.call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    b.call.emit("end");
    await expect(b.done).rejects.toThrow(/without the process's exit status/);
  });

  it("filters escape sequences from the streams it is told to, across chunks, and flushes at exit", async () => {
    const { call, stdout, stderr, done } = setup(true, { stdout: true, stderr: false, utf8: true });
    call.reply({ msg: { $case: "started", value: { pid: 7, domain: "work" } } });
    for (const part of ["a\x1b]52;c;cm0gLXJm", "IH4=\x07b\x1b[", "2J\u009b31mc\x07 ", Buffer.from([0xe2, 0x82])]) {
      call.reply({ msg: { $case: "stdout", value: Buffer.from(part) } });
    }
    call.reply({ msg: { $case: "stderr", value: Buffer.from("\x1b[31mraw\x1b[0m") } });
    call.reply({ msg: { $case: "exit", value: { code: 0, signal: "" } } });
    call.emit("end");
    await done;
    expect(Buffer.concat(stdout.chunks).toString()).toBe("abc_ \uFFFD");
    expect(Buffer.concat(stderr.chunks).toString()).toBe("\x1b[31mraw\x1b[0m"); // not asked to: untouched
  });

  it("without filterEscapes (a pty, --no-filter-escape-chars, or not a terminal) passes bytes untouched", async () => {
    const { call, stdout, done } = setup(true);
    call.reply({ msg: { $case: "stdout", value: Buffer.from("\x1b]0;title\x07\x1b[2J") } });
    call.reply({ msg: { $case: "exit", value: { code: 0, signal: "" } } });
    call.emit("end");
    await done;
    expect(Buffer.concat(stdout.chunks).toString()).toBe("\x1b]0;title\x07\x1b[2J");
  });

  it("an error after the exit status does not change the result", async () => {
    const { call, done } = setup(true);
    call.reply({ msg: { $case: "exit", value: { code: 5, signal: "" } } });
    call.emit("error", new Error("cancelled"));
    expect(await done).toEqual({ code: 5, signal: "" });
  });
});

describe("attachConsole", () => {
  it("passes input and output both ways and detaches at Ctrl-], sending what came before it", async () => {
    const call = new FakeCall<adminV1.ConsoleRequest>();
    const stdin = new PassThrough();
    const stdout = new SlowSink();
    const done = attachConsole(call as unknown as ConsoleCall, "work", { stdin, stdout }, (e) => e as Error);
    expect(call.written[0]).toEqual({ msg: { $case: "start", value: { domain: "work" } } });
    call.reply({ output: Buffer.from("login: ") });
    stdin.write(Buffer.from([0x72, 0x6f, DETACH_BYTE, 0x78]));
    expect(await done).toBe("detached");
    expect(call.written.slice(1)).toEqual([{ msg: { $case: "input", value: Buffer.from("ro") } }]);
    expect(call.cancelled).toBe(true);
    expect(Buffer.concat(stdout.chunks).toString()).toBe("login: ");
  });

  it("ends as closed when qvmd closes the console, and rejects on a stream error", async () => {
    const a = new FakeCall<adminV1.ConsoleRequest>();
    const da = attachConsole(a as unknown as ConsoleCall, "w", { stdin: new PassThrough(), stdout: new SlowSink() }, (e) => e as Error);
    a.emit("end");
    expect(await da).toBe("closed");
    const b = new FakeCall<adminV1.ConsoleRequest>();
    const db = attachConsole(b as unknown as ConsoleCall, "w", { stdin: new PassThrough(), stdout: new SlowSink() }, () => new Error("mapped"));
    b.emit("error", new Error("x"));
    await expect(db).rejects.toThrow("mapped");
  });
});
