// The global clipboard's admin calls against a real qvmd process (no VM: domains are defined,
// never started, so copy and paste stop at "not running"; the window paths are tested with fakes
// in clipboard/ and core/): GetClipboard, SetClipboard, TakeClipboard, the requests' checks,
// the "clipboard" events without the content, and the clipboard living in memory only.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, eventTypeWord } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES } from "@qvm/protocol/contracts";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";

let d: TestDaemon;
const SECRET = "correct horse battery staple";

beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("clipboard-api"));
  await d.client.createDomain({ name: "work", class: adminV1.DomainClass.DOMAIN_CLASS_STANDALONE_VM, template: "", label: "blue", properties: {} });
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

/** The clipboard events `during` causes, as their fields. */
async function clipboardEvents(during: () => Promise<unknown>): Promise<Array<Record<string, string>>> {
  const stream = d.client.watchEvents({ domain: "" });
  const seen: adminV1.Event[] = [];
  stream.on("data", (e: adminV1.Event) => seen.push(e));
  stream.on("error", () => {});
  await new Promise((r) => setTimeout(r, 100));
  await during();
  await new Promise((r) => setTimeout(r, 200));
  stream.cancel();
  return seen.filter((e) => eventTypeWord(e.type) === "clipboard").map((e) => ({ domain: e.domain, ...e.fields }));
}

/** Every file under `dir`, read; but the domain's volumes (sparse, GiBs, never written here). */
function allFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .map((f) => path.join(dir, f))
    .filter((f) => statSync(f).isFile() && !/\.(qcow2|img)$/.test(f))
    .map((f) => readFileSync(f, "latin1"));
}

describe("the global clipboard's admin calls", () => {
  it("starts empty; set from the desktop, get its source and size, take it back (which wipes it); each change is an event without the content", async () => {
    expect(await d.client.getClipboard({})).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    const before = Date.now();
    const events = await clipboardEvents(async () => {
      const set = await d.client.setClipboard({ data: Buffer.from(SECRET) });
      expect(set).toMatchObject({ source: "dom0", size: SECRET.length });
      expect(set.copiedAtMs).toBeGreaterThanOrEqual(before - 1000);
      expect(await d.client.getClipboard({})).toEqual(set);
      expect(await d.client.takeClipboard({})).toEqual({ data: Buffer.from(SECRET), source: "dom0" });
      expect(await d.client.getClipboard({})).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    });
    expect(events).toEqual([
      { domain: "", action: "set", source: "dom0", target: "", size: String(SECRET.length) },
      { domain: "", action: "take", source: "dom0", target: "dom0", size: String(SECRET.length) },
    ]);
    expect(JSON.stringify(events)).not.toContain("horse");
    await expect(d.client.takeClipboard({})).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "the global clipboard is empty: copy with Ctrl-Shift-C first" });
  });

  it("too much text empties it and fails naming the bound; no text is refused and changes nothing", async () => {
    await d.client.setClipboard({ data: Buffer.from("earlier") });
    const events = await clipboardEvents(async () => {
      await expect(d.client.setClipboard({ data: Buffer.alloc(MAX_CLIPBOARD_BYTES + 1, 0x61) })).rejects.toMatchObject({
        code: "RESOURCE_EXHAUSTED",
        message: expect.stringContaining("larger than the global clipboard's 64000 bytes: the clipboard was emptied"),
      });
    });
    expect(events).toEqual([{ domain: "", action: "clear", source: "dom0", target: "", size: "0" }]);
    expect((await d.client.getClipboard({})).size).toBe(0);
    expect((await d.client.setClipboard({ data: Buffer.alloc(MAX_CLIPBOARD_BYTES, 0x62) })).size).toBe(MAX_CLIPBOARD_BYTES);
    await expect(d.client.setClipboard({ data: Buffer.alloc(0) })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect((await d.client.getClipboard({})).size).toBe(MAX_CLIPBOARD_BYTES);
  });

  it("refuses malformed copy and paste requests, unknown and halted domains, with typed errors; the clipboard stays", async () => {
    await d.client.setClipboard({ data: Buffer.from("kept") });
    const cases: Array<[Promise<unknown>, string, RegExp]> = [
      [d.client.clipboardCopy({ domain: "work", from: undefined }), "INVALID_ARGUMENT", /say what to copy/],
      [d.client.clipboardCopy({ domain: "work", from: { $case: "windowId", value: 0 } }), "INVALID_ARGUMENT", /window ids start at 1/],
      [d.client.clipboardCopy({ domain: "../x", from: { $case: "windowId", value: 1 } }), "INVALID_ARGUMENT", /must start with a letter/],
      [d.client.clipboardCopy({ domain: "nope", from: { $case: "windowId", value: 1 } }), "NOT_FOUND", /no domain named "nope"/],
      [d.client.clipboardCopy({ domain: "work", from: { $case: "windowId", value: 1 } }), "FAILED_PRECONDITION", /^work is not running$/],
      [d.client.clipboardCopy({ domain: "work", from: { $case: "terminal", value: Buffer.from("x") } }), "FAILED_PRECONDITION", /^work is not running$/],
      [d.client.clipboardPaste({ domain: "work", into: undefined }), "INVALID_ARGUMENT", /say where to paste/],
      [d.client.clipboardPaste({ domain: "work", into: { $case: "terminal", value: false } }), "INVALID_ARGUMENT", /say where to paste/],
      [d.client.clipboardPaste({ domain: "work", into: { $case: "terminal", value: true } }), "FAILED_PRECONDITION", /^work is not running$/],
      [d.client.clipboardPaste({ domain: "nope", into: { $case: "windowId", value: 3 } }), "NOT_FOUND", /no domain named "nope"/],
    ];
    for (const [call, code, message] of cases) {
      await expect(call).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
    }
    expect(await d.client.getClipboard({})).toMatchObject({ source: "dom0", size: 4 });
  });

  it("lives in memory only: nothing of it is on disk, and a restart empties it", async () => {
    await d.client.setClipboard({ data: Buffer.from(SECRET) });
    const files = [d.dirs.dataDir, d.dirs.runtimeDir].flatMap(allFiles);
    expect(files.length).toBeGreaterThan(2); // the store, the policy, the socket's neighbours: something was read
    expect(files.filter((text) => text.includes(SECRET))).toEqual([]);
    expect(await d.stop()).toBe(0);
    d = await startTestDaemon(d.dirs);
    expect(await d.client.getClipboard({})).toEqual({ source: "", size: 0, copiedAtMs: 0 });
  });
});
