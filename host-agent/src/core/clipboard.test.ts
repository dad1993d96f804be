// The global clipboard as composed in qvmd: fake VMs whose agents get a selection per window,
// the windows qvmd opened, the policy files qvmd installs (and a user rule written here), and the
// event feed. The clipboard's own rules are tested in clipboard/global-clipboard.test.ts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { QvmEvent } from "../base/events.js";
import { DomainStore } from "../store/domain-store.js";
import { policyDirOf } from "../qrexec/policy/loader.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let events: QvmEvent[];
const size = { width: 800, height: 600 };

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-clipboard-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  vms = new FakeVmFactory();
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes"), { freeBytes: 1e15, overlayBytes: 0 }),
    vms,
  });
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  await qvmd.create({ name: "work", label: "blue" });
  await qvmd.create({ name: "vault", label: "black" });
  events = [];
  qvmd.watchEvents((ev) => events.push(ev));
});

afterEach(async () => {
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the global clipboard in qvmd", () => {
  it("copies from a window qvmd opened and pastes into another domain's window under the installed default policy, then wipes", async () => {
    const w = await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    const v = await qvmd.openWindow({ domain: "vault" }, ["foot"], size, false);
    vms.vms.get("work")!.clipboards.set(w.windowId, Buffer.from("a link"));
    expect(await qvmd.clipboardCopy("work", { window: w.windowId })).toMatchObject({ source: "work", size: 6 });
    expect(qvmd.clipboard()).toMatchObject({ source: "work", size: 6 });
    await qvmd.clipboardPaste("vault", { window: v.windowId });
    expect(vms.vms.get("vault")!.clipboards.get(v.windowId)?.toString()).toBe("a link");
    expect(qvmd.clipboard()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    expect(events.filter((e) => e.type === "clipboard").map((e) => [e.domain, e.fields.action])).toEqual([
      ["work", "copy"],
      ["vault", "paste"],
    ]);
  });

  it("reads the policy files at each paste: a user rule that denies refuses with Qubes' message", async () => {
    await qvmd.openWindow({ domain: "vault" }, ["foot"], size, false);
    qvmd.setClipboard(Buffer.from("from the desktop"));
    writeFileSync(path.join(policyDirOf(path.join(dir, "data")), "30-user.policy"), "qubes.ClipboardPaste * @adminvm vault deny\n");
    await expect(qvmd.clipboardPaste("vault", { terminal: true })).rejects.toMatchObject({ code: "PERMISSION_DENIED", message: "Pasting from dom0 to vault is denied by policies" });
    writeFileSync(path.join(policyDirOf(path.join(dir, "data")), "30-user.policy"), "qubes.ClipboardPaste * @adminvm vault permit\n");
    await expect(qvmd.clipboardPaste("vault", { terminal: true })).rejects.toMatchObject({ code: "POLICY_INVALID" });
    writeFileSync(path.join(policyDirOf(path.join(dir, "data")), "30-user.policy"), "");
    expect(await qvmd.clipboardPaste("vault", { terminal: true })).toEqual({ data: Buffer.from("from the desktop"), source: "dom0" });
  });

  it("refuses a halted domain, a window qvmd does not know, and an empty selection", async () => {
    qvmd.setClipboard(Buffer.from("x"));
    await expect(qvmd.clipboardPaste("vault", { terminal: true })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "vault is not running" });
    await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    await expect(qvmd.clipboardCopy("work", { window: 7 })).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("work has no window 7") });
    // Nothing selected in the window: the clipboard keeps what it had.
    await expect(qvmd.clipboardCopy("work", { window: 1 })).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(qvmd.clipboard()).toMatchObject({ source: "dom0", size: 1 });
  });
});
