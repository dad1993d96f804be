// One browser connection: the WebSocket protocol of the web shell (docs/web-shell.md) on top of
// the admin API. Control messages are JSON text frames, validated against the contract's schema
// (@qvm/protocol/contracts); failures go to the page as {code, message}. Terminal bytes are binary
// frames `u32 terminal id | bytes`, passed through untouched (the page gives them to xterm.js as
// data, never as HTML). Output waits when the browser falls behind (back-pressure onto the admin
// stream), so a domain flooding its terminal slows only that terminal.
// Windows (docs/gui.md): the session sends qvmd's window list, mints the one-shot tickets a
// window's sandboxed frame needs for its display WebSocket, owns the relays opened with them, and
// passes resize and close on to the window backend.
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import { domainInWords, eventTypeWord, type AdminClient, type adminV1 } from "@qvm/protocol";
import {
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
import { relay, type Relay } from "./display.js";
import type { TicketBook } from "./tickets.js";
import type { WindowBackend } from "./windows.js";

/** Browser output queued beyond this pauses the domain's stream until it drains below LOW. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const MAX_TERMINALS = 32;
/** Display streams one page may have open (or being dialled) at once, and per domain. */
export const MAX_DISPLAYS = 32;
export const MAX_DISPLAYS_PER_DOMAIN = 16;
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

/** What a session needs for windows: the backend (qvmd's windows) and the server's ticket book. */
export interface WindowContext {
  backend: WindowBackend;
  tickets: TicketBook<ShellSession>;
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

export class ShellSession {
  private readonly terminals = new Map<number, Terminal>();
  private readonly events: ReturnType<AdminClient["watchEvents"]>;
  /** Display streams open or being dialled, with their relay once it runs. */
  private readonly displays = new Map<DisplaySlot, Relay | undefined>();
  private readonly unwatchWindows: () => void;
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly admin: AdminClient,
    private readonly log: (m: string) => void,
    private readonly windows: WindowContext,
  ) {
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("close", () => this.close());
    ws.on("error", () => this.close());
    this.events = admin.watchEvents({ domain: "" });
    this.events.on("data", (ev: adminV1.Event) => this.onEvent(ev));
    this.events.on("error", () => {});
    this.unwatchWindows = windows.backend.watch(() => void this.sendWindows());
    // The domains first: the page colours windows with their labels.
    void this.sendDomains().then(() => this.sendWindows());
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

  /** The window list to the page; streams of windows no longer listed end (the program exited). */
  private async sendWindows(): Promise<void> {
    let list: WindowSummary[];
    try {
      list = await this.windows.backend.list();
    } catch (err) {
      return this.sendError(err, "cannot list windows: ");
    }
    this.send({ t: "windows", windows: list });
    this.endDisplays((s) => !list.some((w) => w.domain === s.domain && w.id === s.window), "the window closed");
  }

  private async findWindow(domain: string, window: number): Promise<WindowSummary> {
    const w = (await this.windows.backend.list()).find((x) => x.domain === domain && x.id === window);
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
      relay(slot.domain, slot.window, ws, stream, (reason) => {
        slot.release();
        this.send({ t: "window-ended", domain: slot.domain, window: slot.window, reason: clipShellText(reason) });
      }),
    );
  }

  /** A display stream could not start (the dial failed): the page hears why. */
  displayFailed(slot: DisplaySlot, err: unknown): void {
    slot.release();
    this.send({ t: "window-ended", domain: slot.domain, window: slot.window, reason: clipShellText(qvmErrorOf(err).message) });
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
    void this.handle(parsed).catch((err: unknown) => this.sendError(err, "", "id" in parsed ? parsed.id : undefined));
  }

  private async handle(m: PageMessage): Promise<void> {
    switch (m.t) {
      case "list":
        return this.sendDomains();
      case "start":
        await this.admin.startDomain({ name: m.domain });
        return;
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
        this.send({ t: "window-ticket", domain: m.domain, window: m.window, ticket: this.windows.tickets.mint(m.domain, m.window, this) });
        return;
      case "window-resize":
        await this.findWindow(m.domain, m.window);
        await this.windows.backend.resize(m.domain, m.window, m.width, m.height);
        return;
      case "window-close":
        // A request: the program may ask the user first. Its stream ends when the window leaves
        // qvmd's list.
        await this.findWindow(m.domain, m.window);
        await this.windows.backend.close(m.domain, m.window);
        return;
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
    this.events.cancel();
    this.unwatchWindows();
    this.windows.tickets.revoke(this);
    this.endDisplays(() => true, "the page disconnected");
  }
}
