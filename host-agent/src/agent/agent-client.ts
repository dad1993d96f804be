// The host's client of one domain's guest agent. Every reply is untrusted and validated before it
// is returned; every call has a deadline.
import { randomBytes } from "node:crypto";
import { credentials, Metadata, type ClientReadableStream, type ServiceError } from "@grpc/grpc-js";
import { QvmError, agentV1 } from "@qvm/protocol";
import type { ExecSignal } from "@qvm/protocol/contracts";
import { agentCallError } from "./grpc-errors.js";
import { ExecProcess } from "./exec-process.js";
import type { ExecDataListener } from "./data-channel.js";
import { EXEC_DATA_VSOCK_PORT } from "@qvm/protocol/contracts";
import {
  parseGuestInfo,
  parseGuestPing,
  parseListWindowsReply,
  parseOpenWindowReply,
  parseSetNetworkReply,
  parseUsbDeviceList,
  parseWindowClipboardReply,
  type GuestInfo,
  type GuestUsbList,
  type GuestWindow,
  type OpenWindowReply,
  type PingReply,
  type SetNetworkReply,
  type WindowClipboardReply,
} from "./replies.js";
import { DEFAULT_CALL_TIMEOUT_MS, MAX_AGENT_MESSAGE_BYTES } from "./limits.js";

/** Random bytes Reidentify sends for the guest's kernel pool (the guest accepts 32..512). */
export const REIDENTIFY_ENTROPY_BYTES = 64;

export interface ExecOptions {
  /** argv, run directly; or a string, run by /bin/sh -c. */
  command: string[] | string;
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  pty?: { rows: number; cols: number };
}

export class AgentClient {
  private readonly client: agentV1.GuestAgentClient;
  private closed = false;
  /** Where non-pty processes' stdio arrives (data-channel.ts); without it, on the Exec stream. */
  private dataChannels: ExecDataListener | undefined;

  constructor(
    readonly socketPath: string,
    private readonly callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS,
  ) {
    this.client = new agentV1.GuestAgentClient(`unix:${socketPath}`, credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_AGENT_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_AGENT_MESSAGE_BYTES,
      // Reconnect quickly while a domain boots; the default backoff grows to minutes.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
      "grpc.enable_retries": 0,
      // A vsock connection can stall without closing; keepalive pings notice and reconnect. Long
      // enough that pausing a domain briefly does not drop its running Exec streams.
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 20_000,
      "grpc.keepalive_permit_without_calls": 1,
    });
  }

  private unary<Req, Res>(
    what: string,
    fn: (req: Req, md: Metadata, opts: { deadline: Date; waitForReady?: boolean }, cb: (err: ServiceError | null, res: Res) => void) => unknown,
    req: Req,
    timeoutMs = this.callTimeoutMs,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.closedError(what));
      // waitForReady: a call made while the channel reconnects waits for it (up to the deadline)
      // instead of failing at once.
      fn.call(this.client, req, new Metadata(), { deadline: new Date(Date.now() + timeoutMs), waitForReady: true }, (err, res) =>
        err ? reject(agentCallError(err, what, this.socketPath)) : resolve(res),
      );
    });
  }

  async ping(timeoutMs?: number): Promise<PingReply> {
    return parseGuestPing(await this.unary("Ping", this.client.ping, {}, timeoutMs));
  }

  async getInfo(): Promise<GuestInfo> {
    return parseGuestInfo(await this.unary("GetInfo", this.client.getInfo, {}));
  }

  async signal(execId: number, signal: ExecSignal): Promise<void> {
    await this.unary("Signal", this.client.signal, { execId, signal });
  }

  /** Replaces the guest's network configuration; says which clients' rules failed (dropped). */
  async setNetwork(config: agentV1.SetNetworkRequest, timeoutMs = 60_000): Promise<SetNetworkReply> {
    return parseSetNetworkReply(await this.unary("SetNetwork", this.client.setNetwork, config, timeoutMs));
  }

  /**
   * Gives a domain started from another domain's memory snapshot its own identity: `hostname`,
   * REIDENTIFY_ENTROPY_BYTES fresh random bytes for its kernel's pool, and the host's clock (the
   * guest steps its clock when it is more than 1 s off). Resolves once the guest has done all
   * three. The time is taken once the channel is connected, not while it waits to reconnect.
   */
  async reidentify(hostname: string, timeoutMs = this.callTimeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.connected("Reidentify", deadline);
    const req: agentV1.ReidentifyRequest = { hostname, entropy: randomBytes(REIDENTIFY_ENTROPY_BYTES), unixTimeMs: Date.now() };
    await this.unary("Reidentify", this.client.reidentify, req, Math.max(1, deadline - Date.now()));
  }

  /** Resolves once the channel is connected (it may be reconnecting), by `deadline` at the latest. */
  private connected(what: string, deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.closedError(what));
      this.client.waitForReady(deadline, (err) =>
        err ? reject(new QvmError("AGENT_TIMEOUT", `guest agent did not answer ${what} in time: no connection through ${this.socketPath}`, { cause: err })) : resolve(),
      );
    });
  }

  async shutdown(reboot = false): Promise<void> {
    await this.unary("Shutdown", this.client.shutdown, { reboot });
  }

  /**
   * Polls Ping until the agent answers or the deadline passes. `isAlive` lets the caller stop
   * early when the VM has died instead of waiting out the timeout.
   */
  async waitReady(timeoutMs: number, isAlive: () => boolean = () => true): Promise<PingReply> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      if (!isAlive()) throw new QvmError("VMM_FAILED", "the VM exited before its agent answered");
      try {
        return await this.ping(Math.min(2000, Math.max(1, deadline - Date.now())));
      } catch (err) {
        if (err instanceof QvmError && err.code === "AGENT_PROTOCOL") throw err;
        last = err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new QvmError("AGENT_TIMEOUT", `guest agent did not answer within ${timeoutMs} ms`, { cause: last });
  }

  private closedError(what: string): QvmError {
    return new QvmError("AGENT_UNAVAILABLE", `cannot ${what}: the domain's agent connection is closed (is the domain running?)`);
  }

  /** Carries non-pty processes' stdio over `listener`'s connections from now on. */
  useDataChannels(listener: ExecDataListener): void {
    this.dataChannels = listener;
  }

  exec(opts: ExecOptions): ExecProcess {
    if (this.closed) throw this.closedError("Exec");
    const start: agentV1.ExecStart = {
      argv: Array.isArray(opts.command) ? opts.command : [],
      shellCommand: typeof opts.command === "string" ? opts.command : "",
      env: opts.env ?? {},
      cwd: opts.cwd ?? "",
      user: opts.user ?? "",
      pty: opts.pty !== undefined,
      window: opts.pty,
      dataPort: 0,
      dataCookie: Buffer.alloc(0),
    };
    if (start.argv.length === 0 && !start.shellCommand) throw new QvmError("INVALID_ARGUMENT", "exec needs a command");
    // Interactive (pty) sessions stay on the Exec stream: they are about latency, not volume.
    const data = !start.pty && this.dataChannels ? this.dataChannels.expect() : undefined;
    if (data) {
      start.dataPort = EXEC_DATA_VSOCK_PORT;
      start.dataCookie = data.cookie;
    }
    return new ExecProcess(this.client.exec(), start, this.socketPath, data);
  }

  // ---- windows (docs/gui.md) ------------------------------------------------------------------

  async openWindow(req: agentV1.OpenWindowRequest, timeoutMs = 120_000): Promise<OpenWindowReply> {
    return parseOpenWindowReply(await this.unary("OpenWindow", this.client.openWindow, req, timeoutMs));
  }

  async resizeWindow(req: agentV1.ResizeWindowRequest): Promise<void> {
    await this.unary("ResizeWindow", this.client.resizeWindow, req);
  }

  async closeWindow(windowId: number): Promise<void> {
    await this.unary("CloseWindow", this.client.closeWindow, { windowId }, 60_000);
  }

  async listWindows(): Promise<GuestWindow[]> {
    return parseListWindowsReply(await this.unary("ListWindows", this.client.listWindows, {})).windows;
  }

  /**
   * Window `windowId`'s clipboard (its compositor's selection), at most `maxBytes`: a larger one
   * comes back `oversized` with no data, whether the guest said so or sent it anyway.
   */
  async getWindowClipboard(windowId: number, maxBytes: number): Promise<WindowClipboardReply> {
    return parseWindowClipboardReply(await this.unary("GetWindowClipboard", this.client.getWindowClipboard, { windowId, maxBytes }), maxBytes);
  }

  /** Replaces window `windowId`'s clipboard with `data`; resolves once the guest offers it. */
  async setWindowClipboard(windowId: number, data: Buffer): Promise<void> {
    await this.unary("SetWindowClipboard", this.client.setWindowClipboard, { windowId, data });
  }

  /**
   * Follows the guest's window list: `onList` gets each validated list (the first at once);
   * `onEnd` is called once when the stream ends or sends something invalid. Returns a stop.
   */
  watchWindows(onList: (windows: GuestWindow[]) => void, onEnd: (err?: Error) => void): () => void {
    if (this.closed) {
      onEnd(this.closedError("WatchWindows"));
      return () => {};
    }
    const call = this.client.watchWindows({}, new Metadata());
    let ended = false;
    const end = (err?: Error) => {
      if (ended) return;
      ended = true;
      call.cancel();
      onEnd(err);
    };
    call.on("data", (msg: unknown) => {
      try {
        onList(parseListWindowsReply(msg).windows);
      } catch (err) {
        end(err as Error);
      }
    });
    call.on("error", (err: ServiceError) => end(err.code === 1 ? undefined : agentCallError(err, "WatchWindows", this.socketPath)));
    call.on("end", () => end());
    return () => end();
  }

  // ---- USB (docs/usb.md) ------------------------------------------------------------------------

  /** The domain's USB devices, checked (replies.ts: bad entries left out and counted). */
  async listUsbDevices(): Promise<GuestUsbList> {
    return parseUsbDeviceList(await this.unary("ListUsbDevices", this.client.listUsbDevices, {}));
  }

  /**
   * Follows the domain's USB devices: `onList` gets each checked list (the first at once);
   * `onEnd` is called once when the stream ends or sends something that is not a list. Returns a stop.
   */
  watchUsbDevices(onList: (list: GuestUsbList) => void, onEnd: (err?: Error) => void): () => void {
    return this.watch("WatchUsbDevices", () => this.client.watchUsbDevices({}, new Metadata()), parseUsbDeviceList, onList, onEnd);
  }

  /** A server stream of lists: each message parsed (a bad one ends it), `onEnd` once. */
  private watch<T>(what: string, open: () => ClientReadableStream<unknown>, parseMsg: (msg: unknown) => T, onMsg: (v: T) => void, onEnd: (err?: Error) => void): () => void {
    if (this.closed) {
      onEnd(this.closedError(what));
      return () => {};
    }
    const call = open();
    let ended = false;
    const end = (err?: Error) => {
      if (ended) return;
      ended = true;
      call.cancel();
      onEnd(err);
    };
    call.on("data", (msg: unknown) => {
      if (ended) return;
      try {
        onMsg(parseMsg(msg));
      } catch (err) {
        end(err as Error);
      }
    });
    call.on("error", (err: ServiceError) => end(err.code === 1 ? undefined : agentCallError(err, what, this.socketPath)));
    call.on("end", () => end());
    return () => end();
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }
}
