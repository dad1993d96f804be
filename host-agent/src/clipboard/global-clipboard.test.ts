// The global clipboard with fakes: a fake agent per running domain (a selection per window), the
// real policy evaluator over rules written here (and the shipped default), a fixed clock and the
// real event bus. Qubes' behaviour: ask counts as allow on the keystroke but never back into the
// source; deny and no rule refuse with Qubes' message; a paste wipes; too large empties.
import { beforeEach, describe, expect, it } from "vitest";
import { MAX_CLIPBOARD_BYTES } from "@qvm/protocol/contracts";
import { QvmError } from "@qvm/protocol";
import { EventBus, type QvmEvent } from "../base/events.js";
import type { DomainFacts, SystemFacts } from "../qrexec/policy/evaluate.js";
import { DEFAULT_POLICY } from "../qrexec/policy/default-policy.js";
import { parsePolicy, type PolicyRule } from "../qrexec/policy/parser.js";
import { EMPTY_CLIPBOARD_MESSAGE, GlobalClipboard, type ClipboardAgent } from "./global-clipboard.js";
import { clipboardPastePolicy } from "./paste-policy.js";

const facts = (name: string): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "" });
const system: SystemFacts = {
  domains: new Map([...["work", "vault", "personal", "halted"].map((n) => facts(n)), { ...facts("disp12"), class: "DispVM" as const, template: "dvm" }, { ...facts("dvm"), templateForDispvms: true }].map((f) => [f.name, f])),
};

/** A domain's agent: each window's selection; what the host wrote, and a bound it may ignore. */
class FakeAgent implements ClipboardAgent {
  readonly selections = new Map<number, Buffer>();
  readonly written: Array<[number, string]> = [];
  /** Set: the next read waits for it (a copy overtaken by another). */
  gate: Promise<void> | undefined;
  async getWindowClipboard(windowId: number, maxBytes: number) {
    if (this.gate) await this.gate;
    const data = this.selections.get(windowId) ?? Buffer.alloc(0);
    return data.length > maxBytes ? { data: Buffer.alloc(0), oversized: true } : { data, oversized: false };
  }
  async setWindowClipboard(windowId: number, data: Buffer) {
    this.written.push([windowId, data.toString()]);
    this.selections.set(windowId, data);
  }
}

let agents: Map<string, FakeAgent>;
let events: QvmEvent[];
let logged: string[];
let policyText: string;
let clip: GlobalClipboard;
const NOW = 1_790_000_000_000;

function make(): GlobalClipboard {
  const bus = new EventBus({ now: () => NOW, sleep: async () => {} });
  bus.subscribe((e) => events.push(e));
  return new GlobalClipboard({
    agentOf: (d) => {
      if (!system.domains.has(d)) throw new QvmError("NOT_FOUND", `no domain named "${d}"; see \`qvm ls\``);
      const a = agents.get(d);
      if (!a) throw new QvmError("FAILED_PRECONDITION", `${d} is not running`);
      return a;
    },
    windowsOf: (d) => [...(agents.get(d)?.selections.keys() ?? [])].map((windowId) => ({ windowId })),
    decide: clipboardPastePolicy(
      () => parsePolicy(policyText, "t.policy") as PolicyRule[],
      () => system,
    ),
    events: bus,
    clock: { now: () => NOW, sleep: async () => {} },
    log: (m) => logged.push(m),
  });
}

beforeEach(() => {
  agents = new Map(["work", "vault", "personal", "disp12"].map((d) => [d, new FakeAgent()]));
  agents.get("work")!.selections.set(1, Buffer.from("work-text"));
  agents.get("work")!.selections.set(2, Buffer.from(""));
  agents.get("vault")!.selections.set(1, Buffer.from("old vault text"));
  agents.get("personal")!.selections.set(5, Buffer.from("p"));
  agents.get("disp12")!.selections.set(1, Buffer.from(""));
  events = [];
  logged = [];
  policyText = DEFAULT_POLICY;
  clip = make();
});

const clipEvents = (): Array<Record<string, string>> => events.filter((e) => e.type === "clipboard").map((e) => ({ domain: e.domain, ...e.fields }));
const denied = (source: string, target: string) => ({ name: "QvmError", code: "PERMISSION_DENIED", message: `Pasting from ${source} to ${target} is denied by policies` });

describe("the global clipboard", () => {
  it("starts empty; a copy from a window fills it with its source and time, and a paste under the default policy (ask) pastes and wipes it", async () => {
    expect(clip.state()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    expect(await clip.copy("work", { window: 1 })).toEqual({ source: "work", size: 9, copiedAtMs: NOW });
    expect(await clip.paste("vault", { window: 1 })).toEqual({ data: Buffer.alloc(0), source: "work" });
    expect(agents.get("vault")!.written).toEqual([[1, "work-text"]]);
    expect(clip.state()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    await expect(clip.paste("personal", { window: 5 })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: EMPTY_CLIPBOARD_MESSAGE });
    expect(agents.get("personal")!.written).toEqual([]);
  });

  it("a terminal copy takes the caller's text; a terminal paste returns the data instead of writing it", async () => {
    await clip.copy("personal", { terminal: Buffer.from("ls -l\n") });
    expect(clip.state()).toMatchObject({ source: "personal", size: 6 });
    expect(await clip.paste("work", { terminal: true })).toEqual({ data: Buffer.from("ls -l\n"), source: "personal" });
    expect(agents.get("work")!.written).toEqual([]);
    expect(clip.state().size).toBe(0);
  });

  it.each([
    ["allow", "qubes.ClipboardPaste * work vault allow", true],
    ["ask (the keystroke answers it)", "qubes.ClipboardPaste * work @anyvm ask", true],
    ["ask naming the target", "qubes.ClipboardPaste * work vault ask", true],
    ["ask with a default_target", "qubes.ClipboardPaste * work @anyvm ask default_target=personal", true],
    ["deny", "qubes.ClipboardPaste * work vault deny\nqubes.ClipboardPaste * @anyvm @anyvm allow", false],
    ["a rule of another service only", "qubes.Filecopy * work vault allow", false],
    ["no rule", "", false],
    ["ask whose target= sends it elsewhere", "qubes.ClipboardPaste * work @anyvm ask target=personal", false],
  ])("policy %s: pasting work's clipboard into vault %s", async (_what, policy, allowed) => {
    policyText = policy;
    await clip.copy("work", { window: 1 });
    const paste = clip.paste("vault", { window: 1 });
    if (allowed) {
      await paste;
      expect(agents.get("vault")!.written).toEqual([[1, "work-text"]]);
      expect(clip.state().size).toBe(0);
    } else {
      await expect(paste).rejects.toMatchObject(denied("work", "vault"));
      expect(agents.get("vault")!.written).toEqual([]);
      // A refused paste keeps the clipboard: the user may paste it elsewhere.
      expect(clip.state()).toMatchObject({ source: "work", size: 9 });
      expect(logged.at(-1)).toMatch(/^clipboard: a paste from work into vault was refused/);
      expect(logged.join("\n")).not.toContain("work-text");
    }
  });

  it("under ask, pasting back into the source is refused (an ask never offers the source); an explicit allow rule lets it through", async () => {
    await clip.copy("work", { window: 1 });
    await expect(clip.paste("work", { window: 2 })).rejects.toMatchObject(denied("work", "work"));
    expect(agents.get("work")!.written).toEqual([]);
    policyText = `qubes.ClipboardPaste * work work allow\n${DEFAULT_POLICY}`;
    await clip.paste("work", { window: 2 });
    expect(agents.get("work")!.written).toEqual([[2, "work-text"]]);
    // @anyvm allow does not name the source as a target either, and is allowed the same way.
    policyText = "qubes.ClipboardPaste * @anyvm @anyvm allow";
    await clip.copy("vault", { window: 1 });
    await clip.paste("vault", { terminal: true });
    expect(clip.state().size).toBe(0);
  });

  it("a disposable's window gets a paste under the default ask, though qvm's ask prompts offer no disposable by name; not back into itself", async () => {
    await clip.copy("work", { window: 1 });
    await clip.paste("disp12", { window: 1 });
    expect(agents.get("disp12")!.written).toEqual([[1, "work-text"]]);
    clip.set(Buffer.from("from the desktop"));
    await clip.paste("disp12", { window: 1 });
    await clip.copy("disp12", { window: 1 });
    await expect(clip.paste("disp12", { window: 1 })).rejects.toMatchObject(denied("disp12", "disp12"));
    policyText = "qubes.ClipboardPaste * @anyvm @anyvm ask target=vault";
    await expect(clip.paste("disp12", { window: 1 })).rejects.toMatchObject(denied("disp12", "disp12"));
    clip.set(Buffer.from("x"));
    policyText = "qubes.ClipboardPaste * @adminvm @anyvm ask target=vault";
    await expect(clip.paste("disp12", { window: 1 })).rejects.toMatchObject(denied("dom0", "disp12"));
  });

  it("the user's desktop (dom0) is @adminvm: the default policy lets it paste anywhere; a policy for domains alone does not", async () => {
    clip.set(Buffer.from("password"));
    expect(clip.state()).toEqual({ source: "dom0", size: 8, copiedAtMs: NOW });
    await clip.paste("vault", { window: 1 });
    expect(agents.get("vault")!.written).toEqual([[1, "password"]]);
    policyText = "qubes.ClipboardPaste * @anyvm @anyvm ask";
    clip.set(Buffer.from("again"));
    await expect(clip.paste("vault", { window: 1 })).rejects.toMatchObject(denied("dom0", "vault"));
  });

  it("a copy larger than the bound empties the clipboard and fails, naming the bound; the bound itself fits", async () => {
    clip.set(Buffer.from("earlier"));
    agents.get("work")!.selections.set(1, Buffer.alloc(MAX_CLIPBOARD_BYTES + 1, 0x61));
    await expect(clip.copy("work", { window: 1 })).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: expect.stringContaining("64000 bytes: the clipboard was emptied") });
    expect(clip.state()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    clip.set(Buffer.from("earlier"));
    await expect(clip.copy("work", { terminal: Buffer.alloc(MAX_CLIPBOARD_BYTES + 1) })).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(clip.state().size).toBe(0);
    clip.set(Buffer.from("earlier"));
    expect(() => clip.set(Buffer.alloc(MAX_CLIPBOARD_BYTES + 1))).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    expect(clip.state().size).toBe(0);
    agents.get("work")!.selections.set(1, Buffer.alloc(MAX_CLIPBOARD_BYTES, 0x62));
    expect((await clip.copy("work", { window: 1 })).size).toBe(MAX_CLIPBOARD_BYTES);
    expect(clipEvents().filter((e) => e.action === "clear")).toEqual([
      { domain: "work", action: "clear", source: "work", target: "", size: "0" },
      { domain: "work", action: "clear", source: "work", target: "", size: "0" },
      { domain: "", action: "clear", source: "dom0", target: "", size: "0" },
    ]);
  });

  it("an empty selection copies nothing and leaves the clipboard as it was", async () => {
    clip.set(Buffer.from("kept"));
    await expect(clip.copy("work", { window: 2 })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("nothing is selected in work's window 2") });
    await expect(clip.copy("work", { terminal: Buffer.alloc(0) })).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(() => clip.set(Buffer.alloc(0))).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(clip.state()).toMatchObject({ source: "dom0", size: 4 });
  });

  it("take hands out the content and its source and wipes it; take of an empty clipboard fails", async () => {
    await clip.copy("work", { window: 1 });
    expect(clip.take()).toEqual({ data: Buffer.from("work-text"), source: "work" });
    expect(clip.state()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    expect(() => clip.take()).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION", message: EMPTY_CLIPBOARD_MESSAGE }));
  });

  it("refuses a window qvmd does not know, a stopped domain and an unknown one, leaving the clipboard alone", async () => {
    clip.set(Buffer.from("kept"));
    await expect(clip.copy("work", { window: 9 })).rejects.toMatchObject({ code: "NOT_FOUND", message: "work has no window 9; its windows: 1, 2" });
    await expect(clip.paste("vault", { window: 9 })).rejects.toMatchObject({ code: "NOT_FOUND", message: "vault has no window 9; its windows: 1" });
    agents.get("vault")!.selections.clear();
    await expect(clip.paste("vault", { window: 1 })).rejects.toMatchObject({ code: "NOT_FOUND", message: "vault has no window 1; it has none (open one with `qvm run --gui`)" });
    await expect(clip.copy("halted", { terminal: Buffer.from("x") })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "halted is not running" });
    await expect(clip.paste("halted", { terminal: true })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "halted is not running" });
    await expect(clip.paste("ghost", { terminal: true })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(clip.state()).toMatchObject({ source: "dom0", size: 4 });
    expect(agents.get("vault")!.written).toEqual([]);
  });

  it("a paste wipes only what it pasted: a copy that lands while the paste is written stays", async () => {
    await clip.copy("work", { window: 1 });
    let release!: () => void;
    const vault = agents.get("vault")!;
    const slow = new Promise<void>((r) => (release = r));
    const original = vault.setWindowClipboard.bind(vault);
    vault.setWindowClipboard = async (id, data) => {
      await slow;
      return original(id, data);
    };
    const paste = clip.paste("vault", { window: 1 });
    await clip.copy("personal", { window: 5 });
    release();
    await paste;
    expect(vault.written).toEqual([[1, "work-text"]]);
    expect(clip.state()).toMatchObject({ source: "personal", size: 1 });
  });

  it("a copy overtaken by a later copy or set is dropped; a later request that is refused outright does not overtake it", async () => {
    let release!: () => void;
    agents.get("work")!.gate = new Promise<void>((r) => (release = r));
    const first = clip.copy("work", { window: 1 });
    await clip.copy("personal", { window: 5 });
    release();
    expect(await first).toMatchObject({ source: "personal", size: 1 });
    expect(clip.state()).toMatchObject({ source: "personal" });

    agents.get("work")!.gate = new Promise<void>((r) => (release = r));
    const second = clip.copy("work", { window: 1 });
    clip.set(Buffer.from("typed"));
    release();
    expect(await second).toMatchObject({ source: "dom0", size: 5 });

    agents.get("work")!.gate = new Promise<void>((r) => (release = r));
    const third = clip.copy("work", { window: 1 });
    await expect(clip.copy("work", { window: 9 })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(() => clip.set(Buffer.alloc(0))).toThrow();
    release();
    expect(await third).toMatchObject({ source: "work", size: 9 });
  });

  it("publishes every change as a clipboard event with action, source, target and size, never the content", async () => {
    await clip.copy("work", { window: 1 });
    await clip.paste("vault", { window: 1 });
    clip.set(Buffer.from("hunter2"));
    clip.take();
    await clip.copy("personal", { terminal: Buffer.from("secret-token") });
    await expect(clip.paste("personal", { terminal: true })).rejects.toThrow();
    expect(clipEvents()).toEqual([
      { domain: "work", action: "copy", source: "work", target: "", size: "9" },
      { domain: "vault", action: "paste", source: "work", target: "vault", size: "9" },
      { domain: "", action: "set", source: "dom0", target: "", size: "7" },
      { domain: "", action: "take", source: "dom0", target: "dom0", size: "7" },
      { domain: "personal", action: "copy", source: "personal", target: "", size: "12" },
    ]);
    const text = JSON.stringify(events) + logged.join("\n");
    for (const secret of ["work-text", "hunter2", "secret-token"]) expect(text).not.toContain(secret);
  });
});
