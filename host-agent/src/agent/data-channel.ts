// Exec data channels (docs/agent-protocol.md, "Data channel"): a process's stdin, stdout and
// stderr travel over a connection of their own instead of the agent's gRPC stream, which under
// emulation cost two thirds of the throughput. The domain's qvm-exec-data connects to the host
// on vsock port EXEC_DATA_VSOCK_PORT, which vhost-device-vsock delivers to the Unix socket
// `<vsock uds>_51`, and sends first the 16-byte cookie the host put in that Exec's request.
//
// The guest is hostile: a connection is matched only by a cookie the host made (random, used
// once, expiring), must send it within a few seconds, and connections awaiting theirs are capped,
// so a domain flooding the port costs only its own data channels.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import net, { type Socket } from "node:net";
import { QvmError } from "@qvm/protocol";
import { listenForGuest } from "../vsock/guest-port-listener.js";

export const COOKIE_BYTES = 16;
/** How long a connection may take to send its cookie. */
const COOKIE_TIMEOUT_MS = 5000;
/** How long a cookie waits for its connection (the helper connects before the program runs). */
const EXPECT_TIMEOUT_MS = 60_000;
/** Connections that have not sent their cookie yet, per domain. */
const MAX_UNNAMED = 32;
/** Cookies waiting for their connection, per domain (one per running non-pty Exec). */
const MAX_EXPECTED = 1024;

interface Expected {
  resolve(s: Socket): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export interface DataChannelWait {
  cookie: Buffer;
  /** The connection, once the guest has made it and named it. */
  socket: Promise<Socket>;
  /** Stops waiting (the Exec ended or the agent does not use the channel). */
  cancel(): void;
}

export class ExecDataListener {
  private readonly expected = new Map<string, Expected>();
  private unnamed = 0;
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
  ) {}

  /** Listens on `socketPath`; `owner` (the jailed VMM's user) must be able to connect to it. */
  static async listen(socketPath: string, owner?: { uid: number; gid: number }): Promise<ExecDataListener> {
    const server = net.createServer({ allowHalfOpen: true });
    const listener = new ExecDataListener(server, socketPath);
    server.on("connection", (s) => listener.accept(s));
    server.on("error", () => {});
    await listenForGuest(server, socketPath, owner);
    return listener;
  }

  /** A fresh cookie and the connection that will present it. */
  expect(): DataChannelWait {
    if (this.closed) throw new QvmError("AGENT_UNAVAILABLE", "the domain's data channel is closed (is the domain running?)");
    if (this.expected.size >= MAX_EXPECTED) throw new QvmError("RESOURCE_EXHAUSTED", `more than ${MAX_EXPECTED} processes wait for their data channel in this domain`);
    const cookie = randomBytes(COOKIE_BYTES);
    const key = cookie.toString("hex");
    let cancel = () => {};
    const socket = new Promise<Socket>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.expected.delete(key);
        reject(new QvmError("AGENT_TIMEOUT", "the domain's process did not open its data channel"));
      }, EXPECT_TIMEOUT_MS);
      timer.unref();
      this.expected.set(key, { resolve, reject, timer });
      cancel = () => {
        clearTimeout(timer);
        if (this.expected.delete(key)) reject(new QvmError("AGENT_UNAVAILABLE", "no longer waiting for the data channel"));
      };
    });
    socket.catch(() => {});
    return { cookie, socket, cancel };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    rmSync(this.socketPath, { force: true });
    for (const [key, e] of this.expected) {
      clearTimeout(e.timer);
      e.reject(new QvmError("AGENT_UNAVAILABLE", "the domain stopped"));
      this.expected.delete(key);
    }
  }

  private accept(s: Socket): void {
    if (this.unnamed >= MAX_UNNAMED) return void s.destroy();
    this.unnamed++;
    let got = Buffer.alloc(0);
    let named = false;
    const done = () => {
      if (named) return;
      named = true;
      this.unnamed--;
      clearTimeout(timer);
      s.off("data", onData);
    };
    const timer = setTimeout(() => {
      done();
      s.destroy();
    }, COOKIE_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < COOKIE_BYTES) return;
      done();
      s.pause();
      const e = this.expected.get(got.subarray(0, COOKIE_BYTES).toString("hex"));
      if (!e) return void s.destroy();
      this.expected.delete(got.subarray(0, COOKIE_BYTES).toString("hex"));
      clearTimeout(e.timer);
      // Bytes after the cookie are the first frames: hand them back to the reader.
      if (got.length > COOKIE_BYTES) s.unshift(got.subarray(COOKIE_BYTES));
      e.resolve(s);
    };
    s.on("data", onData);
    s.on("error", () => {});
    s.on("close", () => {
      if (!named) done();
    });
  }
}
