// One browser connection: the WebSocket protocol of the web shell (docs/web-shell.md) on top of
// the admin API. Control messages are JSON text frames, validated against the contract's schema
// (@qvm/protocol/contracts); failures go to the page as {code, message}. Terminal bytes are binary
// frames `u32 terminal id | bytes`, passed through untouched (the page gives them to xterm.js as
// data, never as HTML). Output waits when the browser falls behind (back-pressure onto the admin
// stream), so a domain flooding its terminal slows only that terminal.
// Windows (docs/gui.md): the session sends qvmd's window list, mints the one-shot tickets a
// window's sandboxed frame needs for its display WebSocket, owns the relays opened with them, and
// passes resize and close on to the window backend.
// The clipboard (docs/web-shell.md): the page's clipboard requests go to the clipboard backend
// (qvmd's global clipboard); a terminal's text is attributed to the domain this session opened
// that terminal on, never to a domain the page names. The clipboard's state follows its changes.
// Encrypted domains: a start carries the passphrase the page's dialog asked for; a start that
// needs one, or whose one qvmd refused, is answered {t:"passphrase-needed"} so the page asks.
// A qvmd restart: qvmd's event feed says `lost`, then `back`; the window streams through the old
// qvmd ended, and each window qvmd lists again gets a new ticket without the page asking (its
// frame reconnects), while windows qvmd has not re-learned yet stay on the page for a while.
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import { domainInWords, eventTypeWord, type AdminClient, type adminV1 } from "@qvm/protocol";
import {
  MAX_CLIPBOARD_BYTES,
  MAX_SHELL_WINDOWS,
  QvmError,
  clipShellText,
  isQvmError,
  pageMessageSchema,
  type DomainSummary,
  type EventTypeWord,
  type PageMessage,
  type ServerMessage,
  type WindowSummary,
} from "@qvm/protocol/contracts";
import type { AdminEventFeed } from "./admin-events.js";
import { terminalPasteText, type ClipboardBackend } from "./clipboard.js";
import { relay, type Relay } from "./display.js";
import type { TicketBook } from "./tickets.js";
import type { WindowBackend, WindowChange } from "./windows.js";

/** Browser output queued beyond this pauses the domain's stream until it drains below LOW. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const MAX_TERMINALS = 32;
/** Display streams one page may have open (or being dialled) at once, and per domain. */
export const MAX_DISPLAYS = 32;
export const MAX_DISPLAYS_PER_DOMAIN = 16;
/** Why a window's stream closed when qvmd went away; the page shows it until the stream is back. */
export const QVMD_GONE_REASON = "the stream was closed because qvmd stopped or restarted; it reconnects once qvmd lists the window again";
/** After qvmd is back, how long windows it does not list yet stay on the page (default). */
export const REATTACH_GRACE_MS = 30_000;
/** When the window list is asked again after qvmd is back (ms after): qvmd re-learns the running domains' windows without an event. */
const REATTACH_POLLS_MS = [250, 750, 1500, 3000, 6000, 12_000, 20_000];
/** A stream that ended this shortly before qvmd's feed said `lost` ended for the same reason (a SIGTERM'd qvmd cancels streams first). */
const LOST_WITHIN_MS = 5000;
/** Events after which the page's domain list is out of date. */
const LIST_CHANGES = new Set<string>([
  "domain-add",
  "domain-delete",
  "domain-start",
  "domain-start-failed",
  "domain-paused",
  "domain-unpaused",
  "domain-shutdown",
  "domain-pre-shutdown",
] satisfies EventTypeWord[]);

interface Terminal {
  domain: string;
  write(data: Buffer): void;
  resize(rows: number, cols: number): void;
  close(): void;
}

/** The part of an admin output stream the pump uses (Exec and Console alike). */
interface OutputStream<Res> {
  on(event: "data", fn: (res: Res) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** What a session shares with the server's other sessions. */
export interface SessionContext {
  /** qvmd's windows. */
  windows: WindowBackend;
  /** The server's display tickets. */
  tickets: TicketBook<ShellSession>;
  /** qvmd's global clipboard. */
  clipboard: ClipboardBackend;
  /** qvmd's event feed (the domain list, terminals of stopped domains), kept up across restarts. */
  events: AdminEventFeed;
  /** After a qvmd restart, how long windows it does not list yet stay on the page. */
  reattachGraceMs: number;
}

/** A display stream counted against the page's bounds from before its dial until it ends. */
export interface DisplaySlot {
  domain: string;
  window: number;
  release(): void;
}

/** Every failure goes to the page with a code from the table, whatever threw it. */
function qvmErrorOf(err: unknown): QvmError {
  return isQvmError(err) ? err : new QvmError("INTERNAL", err instanceof Error ? err.message : String(err));
}

const keyOf = (domain: string, window: number) => `${domain}/${window}`;

export class ShellSession {
  private readonly terminals = new Map<number, Terminal>();
  private readonly unwatchEvents: () => void;
  /** Display streams open or being dialled, with their relay once it runs. */
  private readonly displays = new Map<DisplaySlot, Relay | undefined>();
  private readonly unwatchWindows: () => void;
  private readonly unwatchClipboard: () => void;
  private closed = false;
  /** Only the latest window list and clipboard state asked for is sent (answers may cross). */
  private windowsAsked = 0;
  private clipboardAsked = 0;
  /** The window list last sent (qvmd's part). */
  private listed: WindowSummary[] = [];
  /** qvmd went away (the window feed said `lost`) and has not answered again. */
  private qvmdGone = false;
  /** Windows whose streams closed because qvmd went away: reconnected once listed again. */
  private readonly awaiting = new Map<string, WindowSummary>();
  /** When each window's last stream ended, for a `lost` that arrives after the streams' ends. */
  private readonly lastEnded = new Map<string, number>();
  /** Until then (after qvmd is back), awaited windows qvmd does not list yet stay on the page. */
  private reattachUntil = 0;
  private reattachTimers: NodeJS.Timeout[] = [];

  constructor(
    private readonly ws: WebSocket,
    private readonly admin: AdminClient,
    private readonly log: (m: string) => void,
    private readonly ctx: SessionContext,
  ) {
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("close", () => this.close());
    ws.on("error", () => this.close());
    this.unwatchEvents = ctx.events.subscribe({
      event: (ev) => this.onEvent(ev),
      lost: () => this.sendError(new QvmError("DAEMON_UNAVAILABLE", "lost the connection to qvmd (stopped or restarting): reconnecting")),
      back: () => void this.sendDomains(),
    });
    this.unwatchWindows = ctx.windows.watch((change) => this.onWindowChange(change));
    this.unwatchClipboard = ctx.clipboard.watch(() => void this.sendClipboard());
    // The domains first: the page colours windows with their labels.
    void this.sendDomains()
      .then(() => this.sendWindows())
      .then(() => this.sendClipboard());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private send(msg: ServerMessage): void {
    if (!this.closed) this.ws.send(JSON.stringify(msg));
  }

  private sendError(err: unknown, prefix = "", id?: number): void {
    const e = qvmErrorOf(err);
    this.send({ t: "error", code: e.code, message: clipShellText(prefix + e.message), ...(id === undefined ? {} : { id }) });
  }

  private async sendDomains(): Promise<void> {
    try {
      const { domains } = await this.admin.listDomains({});
      // The page draws Qubes' words: AppVM, Running.
      const list: DomainSummary[] = domains.map(domainInWords).map((d) => ({ name: d.name, class: d.class, state: d.state, label: d.label }));
      this.send({ t: "domains", domains: list });
    } catch (err) {
      this.sendError(err, "cannot list domains: ");
    }
  }

  /**
   * The window list to the page; streams of windows no longer listed end (the program exited).
   * After a qvmd restart, an awaited window listed again gets a new ticket unasked (its frame
   * reconnects), and one not listed yet stays on the page until the grace after qvmd's return
   * is over.
   */
  private async sendWindows(): Promise<void> {
    const asked = ++this.windowsAsked;
    let list: WindowSummary[];
    try {
      list = await this.ctx.windows.list();
    } catch (err) {
      if (asked === this.windowsAsked && !this.qvmdGone) this.sendError(err, "cannot list windows: ");
      return;
    }
    if (asked !== this.windowsAsked || this.closed) return;
    this.listed = list;
    const isListed = (k: string) => list.some((w) => keyOf(w.domain, w.id) === k);
    const holding = this.qvmdGone || Date.now() < this.reattachUntil;
    const held: WindowSummary[] = [];
    const reconnect: WindowSummary[] = [];
    for (const [k, w] of [...this.awaiting]) {
      if (isListed(k)) {
        this.awaiting.delete(k);
        if (!this.hasDisplay(w.domain, w.id)) reconnect.push(w);
      } else if (holding) held.push(w);
      else this.awaiting.delete(k);
    }
    this.send({ t: "windows", windows: [...list, ...held].slice(0, MAX_SHELL_WINDOWS) });
    for (const w of reconnect) this.send({ t: "window-ticket", domain: w.domain, window: w.id, ticket: this.ctx.tickets.mint(w.domain, w.id, this), reconnect: true });
    this.endDisplays((s) => !isListed(keyOf(s.domain, s.window)), "the window closed");
    for (const k of [...this.lastEnded.keys()]) if (!isListed(k)) this.lastEnded.delete(k);
  }

  private hasDisplay(domain: string, window: number): boolean {
    for (const s of this.displays.keys()) if (s.domain === domain && s.window === window) return true;
    return false;
  }

  /** qvmd's windows changed, or qvmd went away, or it is back after a restart. */
  private onWindowChange(change: WindowChange): void {
    if (this.closed) return;
    if (change === "changed") return void this.sendWindows();
    if (change === "lost") {
      this.qvmdGone = true;
      this.stopReattach();
      const now = Date.now();
      for (const w of this.listed) {
        const k = keyOf(w.domain, w.id);
        const ended = this.lastEnded.get(k);
        if (this.hasDisplay(w.domain, w.id)) this.awaiting.set(k, w);
        else if (ended !== undefined && now - ended < LOST_WITHIN_MS && !this.awaiting.has(k)) {
          // It ended moments ago, for the same reason: the page hears the real one.
          this.awaiting.set(k, w);
          this.send({ t: "window-ended", domain: w.domain, window: w.id, reason: QVMD_GONE_REASON });
        }
      }
      return;
    }
    // Back: qvmd re-learns the running domains' windows over the next seconds, and says nothing
    // when it does; the list is asked now and again until the grace is over.
    this.qvmdGone = false;
    this.reattachUntil = Date.now() + this.ctx.reattachGraceMs;
    this.stopReattach();
    const polls = [...REATTACH_POLLS_MS.filter((ms) => ms < this.ctx.reattachGraceMs), this.ctx.reattachGraceMs + 50];
    this.reattachTimers = polls.map((ms) => setTimeout(() => void this.sendWindows(), ms));
    void this.sendWindows();
  }

  private stopReattach(): void {
    for (const t of this.reattachTimers) clearTimeout(t);
    this.reattachTimers = [];
  }

  /** A display stream ended: with qvmd gone (or its stream lost with qvmd), the window is awaited. */
  private displayEnded(slot: DisplaySlot, reason: string, err?: unknown): void {
    slot.release();
    const k = keyOf(slot.domain, slot.window);
    this.lastEnded.set(k, Date.now());
    let why = reason;
    if (this.qvmdGone || (isQvmError(err) && err.code === "DAEMON_UNAVAILABLE")) {
      why = QVMD_GONE_REASON;
      const w = this.listed.find((x) => x.domain === slot.domain && x.id === slot.window);
      if (w) this.awaiting.set(k, w);
    }
    this.send({ t: "window-ended", domain: slot.domain, window: slot.window, reason: clipShellText(why) });
  }

  /** The clipboard's state to the page (never its content). */
  private async sendClipboard(): Promise<void> {
    const asked = ++this.clipboardAsked;
    try {
      const s = await this.ctx.clipboard.state();
      if (asked === this.clipboardAsked) this.send({ t: "clipboard", source: s.source, size: s.size, copiedAtMs: s.copiedAtMs });
    } catch (err) {
      if (asked === this.clipboardAsked && !this.qvmdGone) this.sendError(err, "cannot read the clipboard's state: ");
    }
  }

  /** The domain of terminal `id` of this page: the one it was opened on, whatever the page says. */
  private terminalDomain(id: number): string {
    const t = this.terminals.get(id);
    if (!t) throw new QvmError("NOT_FOUND", `no terminal ${id} on this page`);
    return t.domain;
  }

  /** Clipboard content from qvmd, bounded as a message to the page may carry it. */
  private static bounded(data: Buffer): Buffer {
    if (data.length > MAX_CLIPBOARD_BYTES) throw new QvmError("RESOURCE_EXHAUSTED", `the clipboard holds more than ${MAX_CLIPBOARD_BYTES} bytes`);
    return data;
  }

  private async findWindow(domain: string, window: number): Promise<WindowSummary> {
    const w = (await this.ctx.windows.list()).find((x) => x.domain === domain && x.id === window);
    if (!w) throw new QvmError("NOT_FOUND", `${domain} has no window ${window}`);
    return w;
  }

  /**
   * Room for one more display stream of `domain` (called by the server for a valid ticket, before
   * it dials): a slot to release when the stream ends, or the reason there is none.
   */
  reserveDisplay(domain: string, window: number): DisplaySlot | string {
    if (this.closed) return "the page that asked for the ticket is gone";
    const slots = [...this.displays.keys()];
    if (slots.length >= MAX_DISPLAYS) return `at most ${MAX_DISPLAYS} windows on one page`;
    if (slots.filter((s) => s.domain === domain).length >= MAX_DISPLAYS_PER_DOMAIN) return `at most ${MAX_DISPLAYS_PER_DOMAIN} windows of ${domain} on one page`;
    const slot: DisplaySlot = { domain, window, release: () => this.displays.delete(slot) };
    this.displays.set(slot, undefined);
    return slot;
  }

  /** Runs the relay between a display WebSocket and the window's stream, until either ends. */
  attachDisplay(slot: DisplaySlot, ws: WebSocket, stream: Duplex): void {
    if (this.closed || !this.displays.has(slot)) {
      stream.destroy();
      ws.close(1008, "the page is gone");
      return;
    }
    this.displays.set(
      slot,
      relay(slot.domain, slot.window, ws, stream, (reason, err) => this.displayEnded(slot, reason, err)),
    );
  }

  /** A display stream could not start (the dial failed): the page hears why. */
  displayFailed(slot: DisplaySlot, err: unknown): void {
    this.displayEnded(slot, qvmErrorOf(err).message, err);
  }

  private endDisplays(match: (s: DisplaySlot) => boolean, reason: string): void {
    for (const [slot, r] of [...this.displays]) {
      if (!match(slot)) continue;
      if (r) r.close(reason);
      else slot.release();
    }
  }

  private onEvent(ev: adminV1.Event): void {
    const type = eventTypeWord(ev.type);
    this.send({ t: "event", type, domain: ev.domain });
    if (LIST_CHANGES.has(type)) void this.sendDomains();
    if (type === "domain-shutdown") {
      for (const [id, term] of this.terminals) if (term.domain === ev.domain) this.endTerminal(id, `${ev.domain} stopped`);
      this.endDisplays((s) => s.domain === ev.domain, `${ev.domain} stopped`);
    }
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (data.length < 4) return this.sendError(new QvmError("INVALID_ARGUMENT", "terminal input needs a 4-byte terminal id"));
      this.terminals.get(data.readUInt32BE(0))?.write(data.subarray(4));
      return;
    }
    let parsed: PageMessage;
    try {
      const r = pageMessageSchema.safeParse(JSON.parse(data.toString("utf8")));
      if (!r.success) return this.sendError(new QvmError("INVALID_ARGUMENT", `invalid message: ${r.error.issues[0]?.message ?? "?"}`));
      parsed = r.data;
    } catch {
      return this.sendError(new QvmError("INVALID_ARGUMENT", "invalid message: not JSON"));
    }
    // With `id`, the page closes that terminal: only for a failure of the terminal itself.
    const closes = parsed.t === "open" || parsed.t === "resize" || parsed.t === "close" ? parsed.id : undefined;
    void this.handle(parsed).catch((err: unknown) => this.sendError(err, "", closes));
  }

  private async handle(m: PageMessage): Promise<void> {
    switch (m.t) {
      case "list":
        return this.sendDomains();
      case "start":
        return this.start(m.domain, m.passphrase);
      case "shutdown":
        await this.admin.shutdownDomain({ name: m.domain, wait: false, force: false });
        return;
      case "kill":
        await this.admin.killDomain({ name: m.domain });
        return;
      case "pause":
        await this.admin.pauseDomain({ name: m.domain });
        return;
      case "unpause":
        await this.admin.unpauseDomain({ name: m.domain });
        return;
      case "open":
        if (this.terminals.has(m.id)) throw new QvmError("ALREADY_EXISTS", `terminal ${m.id} is already open`);
        if (this.terminals.size >= MAX_TERMINALS) throw new QvmError("RESOURCE_EXHAUSTED", `at most ${MAX_TERMINALS} terminals at once`);
        this.terminals.set(m.id, m.kind === "shell" ? this.openShell(m.id, m.domain, m.rows, m.cols) : this.openConsole(m.id, m.domain));
        this.send({ t: "opened", id: m.id, domain: m.domain, kind: m.kind });
        return;
      case "resize":
        this.terminals.get(m.id)?.resize(m.rows, m.cols);
        return;
      case "close":
        this.endTerminal(m.id, "closed");
        return;
      case "window-ticket":
        try {
          await this.findWindow(m.domain, m.window);
        } catch (err) {
          this.send({ t: "window-ended", domain: m.domain, window: m.window, reason: clipShellText(qvmErrorOf(err).message) });
          return;
        }
        this.send({ t: "window-ticket", domain: m.domain, window: m.window, ticket: this.ctx.tickets.mint(m.domain, m.window, this) });
        return;
      case "window-resize":
        await this.findWindow(m.domain, m.window);
        await this.ctx.windows.resize(m.domain, m.window, m.width, m.height);
        return;
      case "window-close":
        // A request: the program may ask the user first. Its stream ends when the window leaves
        // qvmd's list.
        await this.findWindow(m.domain, m.window);
        await this.ctx.windows.close(m.domain, m.window);
        return;
      // The clipboard: qvmd checks the policy and the size; its refusals reach the page as errors.
      case "clipboard-copy": {
        await this.findWindow(m.domain, m.window);
        const s = await this.ctx.clipboard.copy(m.domain, { window: m.window });
        this.send({ t: "clipboard-copied", source: m.domain, size: s.size });
        return;
      }
      case "clipboard-paste": {
        await this.findWindow(m.domain, m.window);
        const r = await this.ctx.clipboard.paste(m.domain, { window: m.window });
        this.send({ t: "clipboard-pasted", source: r.source, target: m.domain });
        return;
      }
      case "terminal-copy": {
        const domain = this.terminalDomain(m.id);
        const s = await this.ctx.clipboard.copy(domain, { text: Buffer.from(m.text, "utf8") });
        this.send({ t: "clipboard-copied", source: domain, size: s.size });
        return;
      }
      case "terminal-paste": {
        const domain = this.terminalDomain(m.id);
        const r = await this.ctx.clipboard.paste(domain, "terminal");
        if (!this.terminals.has(m.id)) throw new QvmError("NOT_FOUND", `terminal ${m.id} closed before the paste arrived; the clipboard was wiped`);
        this.send({ t: "terminal-paste-text", id: m.id, text: terminalPasteText(ShellSession.bounded(r.data)), source: r.source });
        return;
      }
      case "clipboard-set": {
        const s = await this.ctx.clipboard.set(Buffer.from(m.text, "utf8"));
        this.send({ t: "clipboard-copied", source: "dom0", size: s.size });
        return;
      }
      case "clipboard-take": {
        const r = await this.ctx.clipboard.take();
        this.send({ t: "clipboard-taken", text: ShellSession.bounded(r.data).toString("utf8"), source: r.source });
        return;
      }
    }
  }

  /**
   * Starts a domain, with the passphrase of an encrypted one when the page sent it (never logged,
   * never sent back). A start that failed for the passphrase is told to the page as
   * {t:"passphrase-needed"} (the page asks the user) instead of an error: PASSPHRASE_REQUIRED is
   * "required"; PERMISSION_DENIED to a start that carried one is "wrong".
   */
  private async start(domain: string, passphrase: string | undefined): Promise<void> {
    try {
      await this.admin.startDomain({ name: domain, passphrase });
    } catch (err) {
      const reason = isQvmError(err, "PASSPHRASE_REQUIRED") ? "required" : passphrase !== undefined && isQvmError(err, "PERMISSION_DENIED") ? "wrong" : undefined;
      if (!reason) throw err;
      this.send({ t: "passphrase-needed", domain, reason });
    }
  }

  /** Pumps one admin stream's output to the browser as binary frames, pausing it while the browser lags. */
  private pump<Res>(id: number, call: OutputStream<Res>, bytesOf: (res: Res) => Buffer | undefined): void {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(id);
    let paused = false;
    call.on("data", (res: Res) => {
      const bytes = bytesOf(res);
      if (!bytes?.length || this.closed) return;
      this.ws.send(Buffer.concat([header, bytes]));
      if (!paused && this.ws.bufferedAmount > HIGH_WATER) {
        paused = true;
        call.pause();
        const wait = setInterval(() => {
          if (this.closed || this.ws.bufferedAmount < LOW_WATER) {
            clearInterval(wait);
            paused = false;
            call.resume();
          }
        }, 20);
      }
    });
  }

  private openShell(id: number, domain: string, rows: number, cols: number): Terminal {
    const call = this.admin.exec();
    call.write({
      msg: {
        $case: "start",
        value: { domain, argv: ["bash", "-l"], shellCommand: "", env: { TERM: "xterm-256color" }, cwd: "", user: "", pty: true, window: { rows, cols }, noAutostart: true, dispvm: "", service: "" },
      },
    });
    this.pump<adminV1.ExecResponse>(id, call, (res) => (res.msg?.$case === "stdout" || res.msg?.$case === "stderr" ? Buffer.from(res.msg.value) : undefined));
    call.on("data", (res: adminV1.ExecResponse) => {
      if (res.msg?.$case === "exit") this.endTerminal(id, `the shell exited (${res.msg.value.signal || res.msg.value.code})`);
    });
    call.on("error", (err: Error) => this.endTerminal(id, this.admin.errorOf(err).message));
    return {
      domain,
      write: (data) => call.write({ msg: { $case: "stdin", value: data } }),
      resize: (r, c) => call.write({ msg: { $case: "resize", value: { rows: r, cols: c } } }),
      close: () => call.cancel(),
    };
  }

  private openConsole(id: number, domain: string): Terminal {
    const call = this.admin.console();
    call.write({ msg: { $case: "start", value: { domain } } });
    this.pump<adminV1.ConsoleResponse>(id, call, (res) => Buffer.from(res.output));
    call.on("error", (err: Error) => this.endTerminal(id, this.admin.errorOf(err).message));
    call.on("end", () => this.endTerminal(id, "the console closed"));
    return {
      domain,
      write: (data) => call.write({ msg: { $case: "input", value: data } }),
      resize: () => {},
      close: () => call.cancel(),
    };
  }

  private endTerminal(id: number, reason: string): void {
    const t = this.terminals.get(id);
    if (!t) return;
    this.terminals.delete(id);
    t.close();
    this.send({ t: "closed", id, reason: clipShellText(reason) });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.terminals.values()) t.close();
    this.terminals.clear();
    this.unwatchEvents();
    this.unwatchWindows();
    this.unwatchClipboard();
    this.stopReattach();
    this.ctx.tickets.revoke(this);
    this.endDisplays(() => true, "the page disconnected");
  }
}
