// cloud-hypervisor's event-monitor stream: CH writes each event as serde_json::to_string_pretty of
// {timestamp:{secs,nanos}, source, event, properties} followed by "\n\n". The parser must yield the
// same events however the bytes arrive, skip (and count) what is not the documented shape, and keep
// its memory bounded against a VMM that writes garbage; the file reader resumes from its offset,
// starts over on a truncated file, and reads a large backlog over several bounded polls.
import { appendFileSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChEventFile, ChEventParser, MAX_EVENT_BYTES, type ChEvent } from "./events.js";

/** One event as CH writes it: pretty-printed JSON (2-space indent, as serde's pretty printer) and a blank line. */
function chEvent(source: unknown, event: unknown, properties: unknown = null, secs = 1700000000): string {
  return JSON.stringify({ timestamp: { secs, nanos: 123456789 }, source, event, properties }, null, 2) + "\n\n";
}

const pendingOf = (p: ChEventParser): string => (p as unknown as { pending: string }).pending;

const BOOT: ChEvent[] = [
  { source: "vmm", event: "starting" },
  { source: "vm", event: "booting" },
  { source: "virtio-device", event: "activated" },
  { source: "vm", event: "booted" },
  { source: "guest", event: "panic" },
  { source: "vm", event: "shutdown" },
];
const BOOT_TEXT =
  chEvent("vmm", "starting") +
  chEvent("vm", "booting") +
  chEvent("virtio-device", "activated", { id: "_virtio-block0" }) +
  chEvent("vm", "booted") +
  chEvent("guest", "panic", { reason: "Kernel panic - not syncing: VFS" }) +
  chEvent("vm", "shutdown");

describe("ChEventParser", () => {
  it("parses several real-shaped events from one push", () => {
    const p = new ChEventParser();
    expect(p.push(BOOT_TEXT)).toEqual(BOOT);
    expect(p.skipped).toBe(0);
    expect(pendingOf(p)).toBe("");
  });

  it("yields exactly the same events when the stream is split at any offset", () => {
    for (let i = 0; i <= BOOT_TEXT.length; i++) {
      const p = new ChEventParser();
      const got = [...p.push(BOOT_TEXT.slice(0, i)), ...p.push(BOOT_TEXT.slice(i))];
      expect(got, `split at ${i}`).toEqual(BOOT);
      expect(p.skipped, `split at ${i}`).toBe(0);
    }
  });

  it("yields the same events when fed one character at a time", () => {
    const p = new ChEventParser();
    const got: ChEvent[] = [];
    for (const c of BOOT_TEXT) got.push(...p.push(c));
    expect(got).toEqual(BOOT);
    expect(p.skipped).toBe(0);
  });

  it("accepts properties null or an object, and keeps only source and event", () => {
    const p = new ChEventParser();
    const got = p.push(chEvent("vm", "paused", null) + chEvent("virtio-device", "reset", { id: "net0", nested: { a: [1, 2] } }));
    expect(got).toEqual([
      { source: "vm", event: "paused" },
      { source: "virtio-device", event: "reset" },
    ]);
    for (const ev of got) expect(Object.keys(ev).sort()).toEqual(["event", "source"]);
  });

  it("skips and counts events whose source or event is not a plain short name", () => {
    const bad: Array<[unknown, unknown]> = [
      [42, "booted"],
      ["vm", 7],
      [null, "booted"],
      ["vm", null],
      [["vm"], "booted"],
      ["vm", { name: "booted" }],
      [undefined, "booted"], // JSON.stringify drops the key
      ["vm", ""],
      ["", "booted"],
      ["vm", "boot\u0000ed"],
      ["vm\u001b[31m", "booted"],
      ["vm", "booted\n"],
      ["vm", "boo\tted"],
      ["vm", "\u007f"],
      ["vm", "booted now"],
      [" vm", "booted"],
      ["vm", "x".repeat(65)],
      ["s".repeat(65), "booted"],
    ];
    const p = new ChEventParser();
    const text = bad.map(([s, e]) => chEvent(s, e)).join("");
    expect(p.push(text + chEvent("vm", "x".repeat(64)))).toEqual([{ source: "vm", event: "x".repeat(64) }]);
    expect(p.skipped).toBe(bad.length);
  });

  it("skips JSON that is not an event object", () => {
    const p = new ChEventParser();
    const text = ["null", "42", '"vm"', "[1,2]", "{}", "true"].map((s) => s + "\n\n").join("");
    expect(p.push(text + chEvent("vm", "booted"))).toEqual([{ source: "vm", event: "booted" }]);
    expect(p.skipped).toBe(6);
  });

  it("skips a chunk that is not JSON and still parses the next event", () => {
    const p = new ChEventParser();
    expect(p.push("this is {not json\n\n" + chEvent("vm", "booted"))).toEqual([{ source: "vm", event: "booted" }]);
    expect(p.skipped).toBe(1);
    // A truncated event (a VMM killed mid-write) followed by the separator.
    const half = chEvent("vm", "shutdown").slice(0, 30);
    expect(p.push(half + "\n\n" + chEvent("vmm", "shutdown"))).toEqual([{ source: "vmm", event: "shutdown" }]);
    expect(p.skipped).toBe(2);
  });

  it("ignores extra blank lines between events", () => {
    const p = new ChEventParser();
    expect(p.push("\n\n\n\n" + chEvent("vm", "booted") + "\n\n  \n\n" + chEvent("vm", "shutdown"))).toEqual([
      { source: "vm", event: "booted" },
      { source: "vm", event: "shutdown" },
    ]);
    expect(p.skipped).toBe(0);
  });

  it("skips a terminated event over MAX_EVENT_BYTES even when it is valid JSON", () => {
    const p = new ChEventParser();
    const big = chEvent("vm", "booted", { pad: "a".repeat(MAX_EVENT_BYTES) });
    expect(p.push(big + chEvent("vm", "shutdown"))).toEqual([{ source: "vm", event: "shutdown" }]);
    expect(p.skipped).toBe(1);
  });

  it("drops an unterminated 1 MiB blob with bounded memory and resynchronises at the next blank line", () => {
    const blob = "G".repeat(1024 * 1024);
    // In one push.
    const one = new ChEventParser();
    expect(one.push(chEvent("vm", "booted") + blob)).toEqual([{ source: "vm", event: "booted" }]);
    expect(pendingOf(one).length).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    expect(one.skipped).toBeGreaterThanOrEqual(1);
    expect(one.push("\n\n" + chEvent("vm", "shutdown"))).toEqual([{ source: "vm", event: "shutdown" }]);
    expect(pendingOf(one)).toBe("");

    // In 4 KiB pieces: pending never grows much past the bound.
    const p = new ChEventParser();
    let maxPending = 0;
    for (let i = 0; i < blob.length; i += 4096) {
      expect(p.push(blob.slice(i, i + 4096))).toEqual([]);
      maxPending = Math.max(maxPending, pendingOf(p).length);
    }
    expect(maxPending).toBeLessThanOrEqual(MAX_EVENT_BYTES + 4096);
    expect(p.skipped).toBeGreaterThanOrEqual(1);
    const skippedBefore = p.skipped;
    // The blob's tail ends at a blank line; the events after it are read.
    expect(p.push("GGG\n\n" + chEvent("vm", "booted") + chEvent("vm", "shutdown"))).toEqual([
      { source: "vm", event: "booted" },
      { source: "vm", event: "shutdown" },
    ]);
    expect(p.skipped).toBe(skippedBefore + 1); // the tail "…GGG" chunk
    expect(pendingOf(p)).toBe("");
  });

  it("resynchronises when the blank line after a blob arrives split across pushes", () => {
    const p = new ChEventParser();
    expect(p.push("G".repeat(2 * MAX_EVENT_BYTES) + "\n")).toEqual([]);
    expect(p.push("\n" + chEvent("vm", "booted"))).toEqual([{ source: "vm", event: "booted" }]);
  });
});

describe("ChEventFile", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "ch-events-"));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("yields no events while the file is missing, then reads it once it appears", () => {
    const file = path.join(dir, "missing.json");
    const f = new ChEventFile(file);
    expect(f.poll()).toEqual([]);
    expect(f.poll()).toEqual([]);
    writeFileSync(file, chEvent("vmm", "starting"));
    expect(f.poll()).toEqual([{ source: "vmm", event: "starting" }]);
    expect(f.skipped).toBe(0);
  });

  it("picks up appends from the last offset without repeating events", () => {
    const file = path.join(dir, "append.json");
    writeFileSync(file, chEvent("vmm", "starting") + chEvent("vm", "booting"));
    const f = new ChEventFile(file);
    expect(f.poll()).toEqual([
      { source: "vmm", event: "starting" },
      { source: "vm", event: "booting" },
    ]);
    expect(f.poll()).toEqual([]);
    // Half an event, then the rest: the event appears once it is complete.
    const booted = chEvent("vm", "booted");
    appendFileSync(file, booted.slice(0, 20));
    expect(f.poll()).toEqual([]);
    appendFileSync(file, booted.slice(20) + chEvent("vm", "paused"));
    expect(f.poll()).toEqual([
      { source: "vm", event: "booted" },
      { source: "vm", event: "paused" },
    ]);
    expect(f.poll()).toEqual([]);
    appendFileSync(file, chEvent("vm", "shutdown"));
    expect(f.poll()).toEqual([{ source: "vm", event: "shutdown" }]);
    expect(f.skipped).toBe(0);
  });

  it("reads a truncated and rewritten file (a new VMM) from the start", () => {
    const file = path.join(dir, "truncate.json");
    writeFileSync(file, chEvent("vmm", "starting") + chEvent("vm", "booting") + chEvent("vm", "booted") + chEvent("vm", "shutdown"));
    const f = new ChEventFile(file);
    expect(f.poll()).toHaveLength(4);
    writeFileSync(file, chEvent("vmm", "starting", null, 1800000000));
    expect(f.poll()).toEqual([{ source: "vmm", event: "starting" }]);
    appendFileSync(file, chEvent("vm", "booting"));
    expect(f.poll()).toEqual([{ source: "vm", event: "booting" }]);
    expect(f.skipped).toBe(0);
  });

  it("does not let a half-written event from the old VMM swallow the new VMM's first event", () => {
    const file = path.join(dir, "truncate-half.json");
    writeFileSync(file, chEvent("vmm", "starting") + chEvent("vm", "booting") + chEvent("vm", "booted") + chEvent("vm", "shutdown").slice(0, 40));
    const f = new ChEventFile(file);
    expect(f.poll()).toHaveLength(3);
    truncateSync(file, 0);
    appendFileSync(file, chEvent("vmm", "starting"));
    expect(f.poll()).toEqual([{ source: "vmm", event: "starting" }]);
  });

  it("reads more than 256 KiB appended at once over several polls without losing events", () => {
    const file = path.join(dir, "big.json");
    writeFileSync(file, "");
    const f = new ChEventFile(file);
    expect(f.poll()).toEqual([]);
    const want: ChEvent[] = [];
    let text = "";
    // Non-ASCII properties too, so a read boundary can fall inside a multi-byte character.
    for (let i = 0; text.length < 700 * 1024; i++) {
      const ev = { source: i % 2 ? "vm" : "virtio-device", event: `ev-${i}` };
      want.push(ev);
      text += chEvent(ev.source, ev.event, { id: `dev${i}`, note: "é→😀".repeat(i % 5) }, 1700000000 + i);
    }
    appendFileSync(file, text);
    expect(Buffer.byteLength(text)).toBeGreaterThan(2 * 256 * 1024);
    const got: ChEvent[] = [];
    let polls = 0;
    for (;;) {
      const evs = f.poll();
      polls++;
      if (!evs.length && got.length === want.length) break;
      got.push(...evs);
      expect(polls).toBeLessThan(50);
    }
    expect(polls).toBeGreaterThanOrEqual(3);
    expect(got).toEqual(want);
    expect(f.skipped).toBe(0);
  });
});
