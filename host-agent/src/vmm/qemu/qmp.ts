// A minimal QMP (QEMU Machine Protocol) client: newline-delimited JSON over a Unix socket.
// QEMU is part of the host's trust zone, but lines are still bounded so a wedged VMM cannot grow
// qvmd's memory without limit.
import net from "node:net";
import { EventEmitter } from "node:events";
import { QvmError } from "@qvm/protocol";

const MAX_QMP_LINE = 1024 * 1024;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  private buf = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    super();
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.onData(d));
    sock.on("error", () => sock.destroy());
    sock.on("close", () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new QvmError("VMM_FAILED", "QMP connection closed"));
      this.pending.clear();
      this.emit("close");
    });
  }

  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(path);
      const t = setTimeout(() => (s.destroy(), reject(new QvmError("VMM_FAILED", `QMP socket ${path} did not answer`))), timeoutMs);
      s.once("connect", () => (clearTimeout(t), resolve(s)));
      s.once("error", (e) => (clearTimeout(t), reject(e)));
    });
    const client = new QmpClient(sock);
    await client.greeting(timeoutMs);
    await client.execute("qmp_capabilities");
    return client;
  }

  private greetingWaiter: ((ok: boolean) => void) | undefined;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new QvmError("VMM_FAILED", "no QMP greeting")), timeoutMs);
      this.greetingWaiter = (ok) => {
        clearTimeout(t);
        ok ? resolve() : reject(new QvmError("VMM_FAILED", "QMP connection closed before greeting"));
      };
      this.once("close", () => this.greetingWaiter?.(false));
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    if (this.buf.length > MAX_QMP_LINE && !this.buf.includes("\n")) {
      this.sock.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if ("QMP" in msg) {
        this.greetingWaiter?.(true);
        this.greetingWaiter = undefined;
      } else if (typeof msg.event === "string") {
        this.emit("event", { event: msg.event, data: msg.data as Record<string, unknown> | undefined });
      } else if (typeof msg.id === "string" && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id)!;
        this.pending.delete(msg.id);
        if ("error" in msg) {
          const e = msg.error as { desc?: string };
          p.reject(new QvmError("VMM_FAILED", `QMP error: ${e.desc ?? "unknown"}`));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new QvmError("VMM_FAILED", "QMP connection closed"));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
