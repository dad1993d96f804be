// The admin-API window backend against a fake admin client (qvmd's side of windows is tested in
// host-agent): the list checked against the page's schema, the events that change it, and a
// window's WindowStream as a byte stream (started by its first bytes, both directions, errors).
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { describe, expect, it } from "vitest";
import { QvmError, eventTypeFromWord, type adminV1 } from "@qvm/protocol";
import { adminWindows, type WindowAdmin } from "./admin-windows.js";

/** A stand-in for a grpc-js client stream: records writes, emits what the test says. */
class FakeCall extends EventEmitter {
  written: unknown[] = [];
  ended = false;
  cancelled = false;
  paused = false;
  write(m: unknown): boolean {
    this.written.push(m);
    return true;
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
}

function fakeAdmin() {
  const calls: { resize: unknown[]; close: unknown[]; streams: FakeCall[]; events: FakeCall[] } = { resize: [], close: [], streams: [], events: [] };
  const admin = {
    listWindows: async () => ({
      windows: [
        { domain: "work", windowId: 1, program: "foot", width: 1024, height: 768 },
        { domain: "work", windowId: 2, program: "huge", width: 99_999, height: 768 },
        { domain: "../x", windowId: 3, program: "foot", width: 1024, height: 768 },
      ],
    }),
    resizeWindow: async (r: unknown) => (calls.resize.push(r), {}),
    closeWindow: async (r: unknown) => (calls.close.push(r), {}),
    windowStream: () => {
      const c = new FakeCall();
      calls.streams.push(c);
      return c;
    },
    watchEvents: () => {
      const c = new FakeCall();
      calls.events.push(c);
      return c;
    },
    errorOf: (err: unknown) => new QvmError("NOT_FOUND", (err as Error).message),
  } as unknown as WindowAdmin;
  return { admin, calls };
}

const output = (bytes: number[]): adminV1.WindowStreamResponse => ({ output: Buffer.from(bytes) });

describe("the admin API's windows", () => {
  it("lists only windows the page's schema accepts, and says when the list changes", async () => {
    const logged: string[] = [];
    const { admin, calls } = fakeAdmin();
    const b = adminWindows(admin, (m) => logged.push(m));
    expect(await b.list()).toEqual([{ domain: "work", id: 1, program: "foot", width: 1024, height: 768 }]);
    expect(logged).toHaveLength(2);
    let changes = 0;
    const stop = b.watch(() => changes++);
    const ev = calls.events[0]!;
    for (const word of ["window-open", "window-close", "domain-shutdown", "domain-add", "domain-paused"] as const) ev.emit("data", { type: eventTypeFromWord(word), domain: "work" });
    expect(changes).toBe(3);
    stop();
    expect(ev.cancelled).toBe(true);
    await b.resize("work", 1, 800, 600);
    await b.close("work", 1);
    expect(calls.resize).toEqual([{ domain: "work", windowId: 1, width: 800, height: 600 }]);
    expect(calls.close).toEqual([{ domain: "work", windowId: 1 }]);
  });

  it("opens a window's stream with start, resolves on its first bytes, and carries bytes both ways", async () => {
    const { admin, calls } = fakeAdmin();
    const dialing = adminWindows(admin).dial("work", 1);
    const call = calls.streams[0]!;
    expect(call.written).toEqual([{ msg: { $case: "start", value: { domain: "work", windowId: 1 } } }]);
    call.emit("data", output([0x52, 0x46, 0x42]));
    const s: Duplex = await dialing;
    const got: Buffer[] = [];
    s.on("data", (b: Buffer) => got.push(b));
    call.emit("data", output([1, 2]));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(got)).toEqual(Buffer.from([0x52, 0x46, 0x42, 1, 2]));
    s.write(Buffer.from([9, 9]));
    await new Promise((r) => setImmediate(r));
    expect(call.written[1]).toEqual({ msg: { $case: "input", value: Buffer.from([9, 9]) } });
    const ended = new Promise((r) => s.once("end", r));
    call.emit("end");
    await ended;
    s.destroy();
    expect(call.cancelled).toBe(true);
  });

  it("fails the dial when the window's stream errs or ends before its first bytes", async () => {
    const { admin, calls } = fakeAdmin();
    const b = adminWindows(admin);
    const gone = b.dial("work", 7);
    calls.streams[0]!.emit("error", new Error("work has no window 7"));
    await expect(gone).rejects.toMatchObject({ code: "NOT_FOUND", message: /no window 7/ });
    const ended = b.dial("work", 8);
    calls.streams[1]!.emit("end");
    await expect(ended).rejects.toMatchObject({ code: "AGENT_UNAVAILABLE" });
  });
});
