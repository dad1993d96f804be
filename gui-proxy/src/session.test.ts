// A page's session against a fake admin client and fake backends (no qvmd, no VM, no browser):
// the global clipboard's messages (a terminal's text attributed by the session to the domain it
// opened the terminal on, never to one the page names; window chords; the desktop's set and take;
// qvmd's refusals passed on; the state sent to every page, the content only to the one that
// asked; text pasted into a terminal without control characters), and a qvmd restart (window
// streams closed with the reason, and a new ticket sent unasked once qvmd lists the window again;
// the session's own event feed subscribed again), and encrypted domains (a start's passphrase
// passed to qvmd and never sent back or logged; a start qvmd wants one for, or whose one it
// refused, answered with passphrase-needed).
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { QvmError, domainClassFromWord, powerStateFromWord, type AdminClient } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES, MAX_SHELL_PASSPHRASE, serverMessageSchema } from "@qvm/protocol/contracts";
import { SHELL_PROTOCOL, TOKEN_PROTOCOL_PREFIX } from "./access.js";
import { memoryClipboard, terminalPasteText, type MemoryClipboard } from "./clipboard.js";
import { startShellServer, type ShellServer } from "./server.js";
import { QVMD_GONE_REASON } from "./session.js";
import { staticWindows, type StaticWindows } from "./windows.js";

/** A stand-in for a grpc-js stream: records writes, emits what the test says. */
class FakeCall extends EventEmitter {
  written: unknown[] = [];
  cancelled = false;
  write(m: unknown): boolean {
    this.written.push(m);
    return true;
  }
  end(): void {}
  cancel(): void {
    this.cancelled = true;
  }
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
}

const domain = (name: string, label: string) => ({
  name,
  class: domainClassFromWord("AppVM"),
  state: powerStateFromWord("Running"),
  label,
  template: "",
  netvm: "",
  tags: [],
  createdAt: "",
  lastStopReason: "",
  vmmPid: 1,
  accel: "kvm",
});

const admin = {
  exec: [] as FakeCall[],
  events: [] as FakeCall[],
  /** Every StartDomain request, as the session made it. */
  starts: [] as unknown[],
  client: {} as AdminClient,
};
/** vault is encrypted under this passphrase (qvmd's answers to StartDomain, as in host-agent's runner). */
const VAULT_PASSPHRASE = "correct horse battery staple";
/** What the server logged. */
const logged: string[] = [];
admin.client = {
  listDomains: async () => ({ domains: [domain("work", "blue"), domain("vault", "purple")] }),
  watchEvents: () => {
    const c = new FakeCall();
    admin.events.push(c);
    return c;
  },
  getDaemonInfo: async () => ({}),
  exec: () => {
    const c = new FakeCall();
    admin.exec.push(c);
    return c;
  },
  errorOf: (err: unknown) => new QvmError("INTERNAL", (err as Error).message),
  startDomain: async (req: { name: string; passphrase?: string }) => {
    admin.starts.push(req);
    if (req.name === "vault") {
      if (req.passphrase === undefined) throw new QvmError("PASSPHRASE_REQUIRED", "vault is encrypted: its passphrase is needed");
      if (req.passphrase !== VAULT_PASSPHRASE) throw new QvmError("PERMISSION_DENIED", "wrong passphrase for vault: its private volume did not unlock; try again");
    }
    if (req.name === "sys-usb") throw new QvmError("PERMISSION_DENIED", "denied by policy");
    return {};
  },
} as unknown as AdminClient;

/** Window streams the fake dialer handed out, to end as a qvmd that goes away would. */
const streams: Duplex[] = [];
let dials = 0;
const GRACE_MS = 800;
let shell: ShellServer;
let windows: StaticWindows;
let clip: MemoryClipboard;
let policy: (source: string, target: string) => boolean = () => true;
const webDir = mkdtempSync(path.join(os.tmpdir(), "qvm-session-"));
const WORK_1 = { domain: "work", id: 1, program: "foot", width: 640, height: 400 };
const VAULT_2 = { domain: "vault", id: 2, program: "foot", width: 640, height: 400 };

beforeAll(async () => {
  for (const f of ["index.html", "app.js", "app.css", "display.html", "display.js"]) writeFileSync(path.join(webDir, f), `/* ${f} */`);
  windows = staticWindows([WORK_1, VAULT_2], {
    dial: async () => {
      dials++;
      const s = new Duplex({ read: () => {}, write: (_c, _e, done) => done() });
      s.push(Buffer.from("RFB 003.008\n"));
      streams.push(s);
      return s;
    },
  });
  clip = memoryClipboard((s, t) => policy(s, t));
  shell = await startShellServer({ admin: admin.client, webDir, windows, clipboard: clip, reattachGraceMs: GRACE_MS, log: (m) => logged.push(m) });
});

afterAll(async () => {
  await shell?.close();
  rmSync(webDir, { recursive: true, force: true });
});

type Msg = Record<string, unknown> & { t: string };
const pages: WebSocket[] = [];
afterEach(() => {
  for (const p of pages.splice(0)) p.close();
  policy = () => true;
});

/** The page's WebSocket, with every message it got (each checked against the page's schema). */
async function page() {
  const ws = new WebSocket(`ws://127.0.0.1:${shell.port}/ws`, [SHELL_PROTOCOL, `${TOKEN_PROTOCOL_PREFIX}${shell.token}`], { headers: { Origin: `http://127.0.0.1:${shell.port}` } });
  pages.push(ws);
  const got: Msg[] = [];
  ws.on("message", (data, binary) => {
    if (binary) return;
    const m = JSON.parse(String(data)) as Msg;
    expect(serverMessageSchema.safeParse(m).success, JSON.stringify(m).slice(0, 300)).toBe(true);
    got.push(m);
  });
  await new Promise((r) => ws.once("open", r));
  const p = {
    ws,
    got,
    send: (m: unknown) => ws.send(JSON.stringify(m)),
    /** The first message of type `t` (matching) not taken yet; taken by this. */
    next: async (t: string, match: (m: Msg) => boolean = () => true): Promise<Msg> => {
      let found: Msg | undefined;
      await expect.poll(() => (found = got.find((m) => m.t === t && match(m))), { timeout: 5000 }).toBeDefined();
      got.splice(got.indexOf(found!), 1);
      return found!;
    },
    /** Waits until the page has its first clipboard state (after domains and windows). */
    ready: async () => {
      await p.next("clipboard");
      got.length = 0;
      return p;
    },
  };
  return p;
}
type Page = Awaited<ReturnType<typeof page>>;

/** Opens terminal `id` on `domain` (a shell through the fake Exec, which stays open). */
async function terminal(p: Page, id: number, dom: string): Promise<FakeCall> {
  const before = admin.exec.length;
  p.send({ t: "open", id, domain: dom, kind: "shell", rows: 24, cols: 80 });
  await p.next("opened", (m) => m.id === id);
  const call = admin.exec[before]!;
  expect(call.written[0]).toMatchObject({ msg: { $case: "start", value: { domain: dom } } });
  return call;
}

describe("the clipboard in the web shell", () => {
  it("attributes a terminal's text to the terminal's domain, and refuses a page that names one", async () => {
    const p = await (await page()).ready();
    await terminal(p, 1, "work");
    p.send({ t: "terminal-copy", id: 1, text: "secret from work" });
    expect(await p.next("clipboard-copied")).toEqual({ t: "clipboard-copied", source: "work", size: 16 });
    expect(await p.next("clipboard")).toMatchObject({ source: "work", size: 16 });
    expect(clip.calls.at(-1)).toEqual({ op: "copy", domain: "work", from: "terminal" });
    const calls = clip.calls.length;
    // The page cannot say whose text it is, nor copy from a terminal it did not open.
    p.send({ t: "terminal-copy", id: 1, text: "forged", domain: "vault" });
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
    p.send({ t: "terminal-copy", id: 9, text: "nobody's" });
    const err = await p.next("error");
    expect(err).toMatchObject({ code: "NOT_FOUND", message: "no terminal 9 on this page" });
    expect(err.id).toBeUndefined(); // a clipboard failure closes no terminal
    const other = await (await page()).ready();
    other.send({ t: "terminal-copy", id: 1, text: "another page's terminal" });
    expect(await other.next("error")).toMatchObject({ code: "NOT_FOUND" });
    expect(clip.calls.length).toBe(calls);
    expect((await clip.state()).source).toBe("work");
    // Over the bound in UTF-8 (within it in characters): refused before qvmd is asked.
    p.send({ t: "terminal-copy", id: 1, text: "é".repeat(MAX_CLIPBOARD_BYTES / 2 + 1) });
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(clip.calls.length).toBe(calls);
    expect(p.got.filter((m) => m.t === "closed")).toEqual([]);
  });

  it("pastes into a terminal as text the page pastes, wipes the clipboard, and takes control characters out", async () => {
    const p = await (await page()).ready();
    await terminal(p, 1, "work");
    const vault = await terminal(p, 2, "vault");
    p.send({ t: "terminal-copy", id: 1, text: "echo hi\x1b[201~rm -rf ~\r\n\x03\x7f\u009bx\tdone\n" });
    await p.next("clipboard-copied");
    p.send({ t: "terminal-paste", id: 2 });
    expect(await p.next("terminal-paste-text")).toEqual({ t: "terminal-paste-text", id: 2, text: "echo hi[201~rm -rf ~\r\nx\tdone\n", source: "work" });
    expect(clip.calls.at(-1)).toEqual({ op: "paste", domain: "vault", into: "terminal" });
    expect(await p.next("clipboard", (m) => m.source === "")).toMatchObject({ size: 0 });
    // The server typed nothing itself: the page pastes (xterm brackets it), as keystrokes.
    expect(vault.written).toHaveLength(1);
    // Empty now: the paste is refused with qvmd's words.
    p.send({ t: "terminal-paste", id: 2 });
    expect(await p.next("error")).toMatchObject({ code: "FAILED_PRECONDITION", message: "the global clipboard is empty" });
    expect(terminalPasteText(Buffer.from([0x61, 0xff, 0x62, 0x1b, 0x63]))).toBe("a\ufffdbc");
  });

  it("passes a policy's refusal on, pasting back into the source included, and keeps the clipboard", async () => {
    const p = await (await page()).ready();
    await terminal(p, 1, "work");
    await terminal(p, 2, "vault");
    policy = (s, t) => !(s === "work" && t === "vault");
    p.send({ t: "terminal-copy", id: 1, text: "work only" });
    await p.next("clipboard-copied");
    p.send({ t: "terminal-paste", id: 2 });
    expect(await p.next("error")).toMatchObject({ code: "PERMISSION_DENIED", message: "Pasting from work to vault is denied by policies" });
    p.send({ t: "terminal-paste", id: 1 });
    expect(await p.next("error")).toMatchObject({ code: "PERMISSION_DENIED", message: "Pasting from work to work is denied by policies" });
    expect(await clip.state()).toMatchObject({ source: "work", size: 9 });
    expect(p.got.filter((m) => m.t === "terminal-paste-text" || m.t === "closed")).toEqual([]);
  });

  it("copies from and pastes into a listed program window with the chords' messages", async () => {
    const p = await (await page()).ready();
    clip.selections.set("work/1", Buffer.from("from work's window"));
    p.send({ t: "clipboard-copy", domain: "work", window: 1 });
    expect(await p.next("clipboard-copied")).toEqual({ t: "clipboard-copied", source: "work", size: 18 });
    expect(clip.calls.at(-1)).toEqual({ op: "copy", domain: "work", from: "window 1" });
    p.send({ t: "clipboard-paste", domain: "vault", window: 2 });
    expect(await p.next("clipboard-pasted")).toEqual({ t: "clipboard-pasted", source: "work", target: "vault" });
    expect(clip.selections.get("vault/2")?.toString()).toBe("from work's window");
    expect(await p.next("clipboard", (m) => m.source === "")).toBeDefined();
    // A window qvmd does not list: nothing is asked of the clipboard.
    const calls = clip.calls.length;
    p.send({ t: "clipboard-copy", domain: "vault", window: 7 });
    expect(await p.next("error")).toMatchObject({ code: "NOT_FOUND", message: /no window 7/ });
    p.send({ t: "clipboard-paste", domain: "work", window: 2 });
    expect(await p.next("error")).toMatchObject({ code: "NOT_FOUND" });
    expect(clip.calls.length).toBe(calls);
    // A selection over the bound: refused, and the global clipboard emptied (as qvmd does).
    clip.selections.set("work/1", Buffer.alloc(MAX_CLIPBOARD_BYTES + 1, 0x61));
    p.send({ t: "clipboard-set", text: "before" });
    await p.next("clipboard-copied");
    p.send({ t: "clipboard-copy", domain: "work", window: 1 });
    expect(await p.next("error")).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect((await clip.state()).source).toBe("");
  });

  it("takes the desktop's text in and hands the clipboard out to the desktop, wiping it", async () => {
    const p = await (await page()).ready();
    p.send({ t: "clipboard-set", text: "from the desktop ✓" });
    expect(await p.next("clipboard-copied")).toEqual({ t: "clipboard-copied", source: "dom0", size: Buffer.byteLength("from the desktop ✓") });
    expect(await p.next("clipboard", (m) => m.source === "dom0")).toBeDefined();
    p.send({ t: "clipboard-take" });
    expect(await p.next("clipboard-taken")).toEqual({ t: "clipboard-taken", text: "from the desktop ✓", source: "dom0" });
    expect(await clip.state()).toEqual({ source: "", size: 0, copiedAtMs: 0 });
    p.send({ t: "clipboard-take" });
    expect(await p.next("error")).toMatchObject({ code: "FAILED_PRECONDITION" });
    p.send({ t: "clipboard-set", text: "" });
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("tells every page the clipboard's state, and only the page that asked its content", async () => {
    const a = await (await page()).ready();
    const b = await (await page()).ready();
    await terminal(a, 1, "work");
    a.send({ t: "terminal-copy", id: 1, text: "private" });
    expect(await b.next("clipboard", (m) => m.source === "work")).toMatchObject({ size: 7 });
    a.send({ t: "clipboard-take" });
    await a.next("clipboard-taken");
    await b.next("clipboard", (m) => m.source === "");
    expect(JSON.stringify(b.got)).not.toContain("private");
    expect(b.got.filter((m) => m.t.startsWith("clipboard-"))).toEqual([]);
    // A new page starts with the state as it is.
    a.send({ t: "clipboard-set", text: "now" });
    await a.next("clipboard-copied");
    const c = await page();
    expect(await c.next("clipboard")).toMatchObject({ source: "dom0", size: 3 });
    clip.calls.length = 0;
    await clip.take();
  });
});

/** A display stream as the sandboxed frame opens it, with the ticket the page got. */
function display(dom: string, win: number, ticket: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const q = new URLSearchParams({ domain: dom, window: String(win), ticket });
    const ws = new WebSocket(`ws://127.0.0.1:${shell.port}/display-ws?${q}`, { headers: { Origin: "null" } });
    ws.once("unexpected-response", (_req, res) => reject(new Error(`display: ${res.statusCode}`)));
    ws.once("message", () => resolve(ws));
  });
}

async function streaming(p: Page, w: typeof WORK_1): Promise<{ ws: WebSocket; stream: Duplex }> {
  p.send({ t: "window-ticket", domain: w.domain, window: w.id });
  const { ticket } = await p.next("window-ticket", (m) => m.window === w.id);
  const ws = await display(w.domain, w.id, ticket as string);
  return { ws, stream: streams.at(-1)! };
}

describe("a qvmd restart", () => {
  afterEach(() => windows.back([WORK_1, VAULT_2]));

  it("closes a window's stream with the reason, and reconnects it unasked once qvmd lists the window again", async () => {
    const p = await (await page()).ready();
    const { ws } = await streaming(p, WORK_1);
    const pageTickets = () => p.got.filter((m) => m.t === "window-ticket").length;
    const closed = new Promise((r) => ws.once("close", r));
    // qvmd is killed: the stream drops (its error says qvmd is unreachable), then the feed.
    streams.at(-1)!.destroy(new QvmError("DAEMON_UNAVAILABLE", "qvmd is not reachable"));
    expect(await p.next("window-ended")).toEqual({ t: "window-ended", domain: "work", window: 1, reason: QVMD_GONE_REASON });
    await closed;
    windows.lose();
    // Back, but not listing the window yet (qvmd re-learns it from the running domain): the page
    // keeps its frame, and no ticket comes yet.
    windows.back([VAULT_2]);
    expect((await p.next("windows")).windows).toEqual([VAULT_2, WORK_1]);
    expect(pageTickets()).toBe(0);
    const before = dials;
    windows.set([VAULT_2, WORK_1]);
    const t = await p.next("window-ticket", (m) => m.window === 1);
    expect(t).toMatchObject({ domain: "work", window: 1, reconnect: true });
    // The ticket works as one the page asked for: a new stream through the new qvmd.
    const again = await display("work", 1, t.ticket as string);
    expect(dials).toBe(before + 1);
    again.close();
  });

  it("closes with the reason a stream that ended just before the feed said qvmd was gone (SIGTERM)", async () => {
    const p = await (await page()).ready();
    await streaming(p, WORK_1);
    // qvmd's SIGTERM cancels the stream first: its error does not say why.
    streams.at(-1)!.destroy(new QvmError("INTERNAL", "the call was cancelled"));
    expect(await p.next("window-ended")).toMatchObject({ window: 1, reason: /cancelled/ });
    windows.lose();
    expect(await p.next("window-ended")).toMatchObject({ window: 1, reason: QVMD_GONE_REASON });
    // Back, listing it at once: the ticket comes with the list.
    windows.back([WORK_1, VAULT_2]);
    expect(await p.next("window-ticket", (m) => m.window === 1)).toMatchObject({ reconnect: true });
    // vault's window had no stream on this page: nothing to reconnect.
    expect(p.got.filter((m) => m.t === "window-ticket" && m.window === 2)).toEqual([]);
  });

  it("asks qvmd for the list again after it is back, and lets a window it never lists again go after the grace", async () => {
    const p = await (await page()).ready();
    await streaming(p, WORK_1);
    windows.lose();
    streams.at(-1)!.destroy(new QvmError("INTERNAL", "the call was cancelled"));
    expect(await p.next("window-ended")).toMatchObject({ reason: QVMD_GONE_REASON });
    windows.back([]);
    expect((await p.next("windows")).windows).toEqual([WORK_1]);
    // Nothing says the list changed; the session asks again by itself, and after the grace the
    // window is gone from the page.
    const t0 = Date.now();
    await expect.poll(() => p.got.some((m) => m.t === "windows" && (m.windows as unknown[]).length === 0), { timeout: GRACE_MS + 3000 }).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(p.got.filter((m) => m.t === "window-ticket")).toEqual([]);
  });

  it("subscribes to qvmd's events again when the feed drops, and sends the domain list anew", async () => {
    const p = await (await page()).ready();
    const feed = admin.events.at(-1)!;
    feed.emit("error", new Error("Connection dropped"));
    expect(await p.next("error")).toMatchObject({ code: "DAEMON_UNAVAILABLE", message: /lost the connection to qvmd/ });
    await p.next("domains");
    expect(admin.events.at(-1)).not.toBe(feed);
    expect(feed.cancelled).toBe(true);
  });
});

describe("starting an encrypted domain", () => {
  const startsSince = (n: number) => admin.starts.slice(n);

  it("passes the page's passphrase to StartDomain, and none when the page sent none", async () => {
    const p = await (await page()).ready();
    const n = admin.starts.length;
    p.send({ t: "start", domain: "work" });
    p.send({ t: "start", domain: "vault", passphrase: VAULT_PASSPHRASE });
    await expect.poll(() => startsSince(n).length).toBe(2);
    expect(startsSince(n)).toEqual([{ name: "work" }, { name: "vault", passphrase: VAULT_PASSPHRASE }]);
    // Started: no error, no dialog.
    p.send({ t: "list" });
    await p.next("domains");
    expect(p.got.filter((m) => m.t === "error" || m.t === "passphrase-needed")).toEqual([]);
  });

  it("answers a start without the passphrase with passphrase-needed, reason required, not an error", async () => {
    const p = await (await page()).ready();
    p.send({ t: "start", domain: "vault" });
    expect(await p.next("passphrase-needed")).toEqual({ t: "passphrase-needed", domain: "vault", reason: "required" });
    expect(p.got.filter((m) => m.t === "error")).toEqual([]);
  });

  it("answers a refused passphrase with passphrase-needed, reason wrong, and never sends it back or logs it", async () => {
    const p = await (await page()).ready();
    const wrong = "not-the-passphrase-4f1c";
    p.send({ t: "start", domain: "vault", passphrase: wrong });
    expect(await p.next("passphrase-needed")).toEqual({ t: "passphrase-needed", domain: "vault", reason: "wrong" });
    expect(admin.starts.at(-1)).toEqual({ name: "vault", passphrase: wrong });
    // Then the right one: started.
    p.send({ t: "start", domain: "vault", passphrase: VAULT_PASSPHRASE });
    await expect.poll(() => admin.starts.at(-1)).toEqual({ name: "vault", passphrase: VAULT_PASSPHRASE });
    p.send({ t: "list" });
    await p.next("domains");
    expect(p.got.filter((m) => m.t === "error" || m.t === "passphrase-needed")).toEqual([]);
    for (const secret of [wrong, VAULT_PASSPHRASE]) expect(JSON.stringify(logged)).not.toContain(secret);
  });

  it("passes on PERMISSION_DENIED to a start without a passphrase as the error it is", async () => {
    const p = await (await page()).ready();
    p.send({ t: "start", domain: "sys-usb" });
    expect(await p.next("error")).toEqual({ t: "error", code: "PERMISSION_DENIED", message: "denied by policy" });
    expect(p.got.filter((m) => m.t === "passphrase-needed")).toEqual([]);
  });

  it("refuses an oversize or empty passphrase by the schema, without asking qvmd or echoing it", async () => {
    const p = await (await page()).ready();
    const n = admin.starts.length;
    const huge = `${"p".repeat(MAX_SHELL_PASSPHRASE)}!`;
    p.send({ t: "start", domain: "vault", passphrase: huge });
    const err = await p.next("error");
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", message: /^invalid message: / });
    expect(String(err.message)).not.toContain("pppp");
    p.send({ t: "start", domain: "vault", passphrase: "" });
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
    p.send({ t: "shutdown", domain: "vault", passphrase: VAULT_PASSPHRASE });
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(startsSince(n)).toEqual([]);
    expect(p.got.filter((m) => m.t === "passphrase-needed")).toEqual([]);
  });
});
