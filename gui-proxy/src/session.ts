// One browser connection: the WebSocket protocol of the web shell (docs/web-shell.md) on top of
// the admin API. Control messages are JSON text frames, validated; terminal bytes are binary
// frames `u32 terminal id | bytes`, passed through untouched (the page gives them to xterm.js as
// data, never as HTML). Output waits when the browser falls behind (back-pressure onto the admin
// stream), so a domain flooding its terminal slows only that terminal.
import type { ClientDuplexStream } from "@grpc/grpc-js";
import type { WebSocket } from "ws";
import { z } from "zod";
import type { AdminClient, adminV1 } from "@qvm/protocol";

/** Browser output queued beyond this pauses the domain's stream until it drains below LOW. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const MAX_TERMINALS = 32;

const size = { rows: z.number().int().min(2).max(500), cols: z.number().int().min(2).max(1000) };
const name = z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$/);
const message = z.discriminatedUnion("t", [
  z.object({ t: z.enum(["start", "shutdown", "kill", "pause", "unpause"]), domain: name }).strict(),
  z.object({ t: z.literal("open"), id: z.number().int().min(1).max(2 ** 31), domain: name, kind: z.enum(["shell", "console"]), ...size }).strict(),
  z.object({ t: z.literal("resize"), id: z.number().int(), ...size }).strict(),
  z.object({ t: z.literal("close"), id: z.number().int() }).strict(),
  z.object({ t: z.literal("list") }).strict(),
]);
type Message = z.infer<typeof message>;

interface Terminal {
  domain: string;
  write(data: Buffer): void;
  resize(rows: number, cols: number): void;
  close(): void;
}

export interface DomainSummary {
  name: string;
  klass: string;
  state: string;
  label: string;
}

export class ShellSession {
  private readonly terminals = new Map<number, Terminal>();
  private readonly events: ReturnType<AdminClient["watchEvents"]>;
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly admin: AdminClient,
    private readonly log: (m: string) => void,
  ) {
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("close", () => this.close());
    ws.on("error", () => this.close());
    this.events = admin.watchEvents();
    this.events.on("data", (ev: adminV1.Event) => this.onEvent(ev));
    this.events.on("error", () => {});
    void this.sendDomains();
  }

  private send(msg: object): void {
    if (!this.closed) this.ws.send(JSON.stringify(msg));
  }

  private async sendDomains(): Promise<void> {
    try {
      const { domains } = await this.admin.listDomains();
      const list: DomainSummary[] = domains.map((d) => ({ name: d.name, klass: d.klass, state: d.state, label: d.label }));
      this.send({ t: "domains", domains: list });
    } catch (err) {
      this.send({ t: "error", message: `cannot list domains: ${(err as Error).message}` });
    }
  }

  private onEvent(ev: adminV1.Event): void {
    this.send({ t: "event", type: ev.type, domain: ev.domain });
    if (/^domain-(add|delete|start|start-failed|paused|unpaused|shutdown|pre-shutdown)$/.test(ev.type)) void this.sendDomains();
    if (ev.type === "domain-shutdown") {
      for (const [id, term] of this.terminals) if (term.domain === ev.domain) this.endTerminal(id, `${ev.domain} stopped`);
    }
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (data.length < 4) return this.send({ t: "error", message: "terminal input needs a 4-byte terminal id" });
      this.terminals.get(data.readUInt32BE(0))?.write(data.subarray(4));
      return;
    }
    let parsed: Message;
    try {
      const r = message.safeParse(JSON.parse(data.toString("utf8")));
      if (!r.success) return this.send({ t: "error", message: `invalid message: ${r.error.issues[0]?.message ?? "?"}` });
      parsed = r.data;
    } catch {
      return this.send({ t: "error", message: "invalid message: not JSON" });
    }
    void this.handle(parsed).catch((err: Error) => this.send({ t: "error", message: err.message, ...("id" in parsed ? { id: parsed.id } : {}) }));
  }

  private async handle(m: Message): Promise<void> {
    switch (m.t) {
      case "list":
        return this.sendDomains();
      case "start":
        await this.admin.startDomain(m.domain);
        return;
      case "shutdown":
        await this.admin.shutdownDomain({ name: m.domain, wait: false, force: false });
        return;
      case "kill":
        await this.admin.killDomain(m.domain);
        return;
      case "pause":
        await this.admin.pauseDomain(m.domain);
        return;
      case "unpause":
        await this.admin.unpauseDomain(m.domain);
        return;
      case "open":
        if (this.terminals.has(m.id)) throw new Error(`terminal ${m.id} is already open`);
        if (this.terminals.size >= MAX_TERMINALS) throw new Error(`at most ${MAX_TERMINALS} terminals at once`);
        this.terminals.set(m.id, m.kind === "shell" ? this.openShell(m.id, m.domain, m.rows, m.cols) : this.openConsole(m.id, m.domain));
        this.send({ t: "opened", id: m.id, domain: m.domain, kind: m.kind });
        return;
      case "resize":
        this.terminals.get(m.id)?.resize(m.rows, m.cols);
        return;
      case "close":
        this.endTerminal(m.id, "closed");
        return;
    }
  }

  /** Pumps one admin stream's output to the browser as binary frames, pausing it while the browser lags. */
  private pump<Res>(id: number, call: ClientDuplexStream<never, Res>, bytesOf: (res: Res) => Buffer | undefined): void {
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
    this.pump(id, call as never as ClientDuplexStream<never, adminV1.ExecResponse>, (res) => (res.msg?.$case === "stdout" || res.msg?.$case === "stderr" ? Buffer.from(res.msg.value) : undefined));
    call.on("data", (res: adminV1.ExecResponse) => {
      if (res.msg?.$case === "exit") this.endTerminal(id, `the shell exited (${res.msg.value.signal || res.msg.value.code})`);
    });
    call.on("error", (err: Error) => this.endTerminal(id, err.message.replace(/^\d+ [A-Z_]+: /, "")));
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
    this.pump(id, call as never as ClientDuplexStream<never, adminV1.ConsoleResponse>, (res) => Buffer.from(res.output));
    call.on("error", (err: Error) => this.endTerminal(id, err.message.replace(/^\d+ [A-Z_]+: /, "")));
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
    this.send({ t: "closed", id, reason });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.terminals.values()) t.close();
    this.terminals.clear();
    this.events.cancel();
  }
}
