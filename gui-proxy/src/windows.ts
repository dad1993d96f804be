// The window seam (docs/gui.md): what the web shell needs from whoever knows the domains' windows.
// A window is (domain, window id); its pixels come from an RFB server in the domain (a headless
// sway + wayvnc per window), reached as a byte stream. The shell relays those bytes to the
// window's sandboxed frame and parses none of them.
//
// `qvm shell` uses adminWindows (admin-windows.ts: qvmd's admin API, where qvmd dials the window);
// a server started without a backend has `noWindows`; tests use `staticWindows` with
// `unixSocketDialer`. `dialHybridVsock` is for a shell that would dial a domain's vsock itself.
import net from "node:net";
import type { Duplex } from "node:stream";
import { QvmError, type WindowSummary } from "@qvm/protocol/contracts";

/** Opens a byte stream to a window's RFB server. */
export interface WindowDialer {
  /** Resolves once the stream is connected (any handshake done): every byte after is RFB. */
  dial(domain: string, windowId: number): Promise<Duplex>;
}

/** Everything the shell asks about windows; one per server, shared by its pages. */
export interface WindowBackend extends WindowDialer {
  /** Every window qvmd knows of (domain, id, program, size). */
  list(): Promise<WindowSummary[]>;
  /** Calls `onChange` whenever the list may have changed; returns the unsubscribe. */
  watch(onChange: () => void): () => void;
  /** The user resized the window's frame to width×height CSS pixels: the domain's output follows. */
  resize(domain: string, windowId: number, width: number, height: number): Promise<void>;
  /** The user closed the window: the program gets a close request. */
  close(domain: string, windowId: number): Promise<void>;
}

/** No windows: none listed, no stream, and the two user actions only logged. */
export function noWindows(log: (m: string) => void): WindowBackend {
  return {
    list: async () => [],
    watch: () => () => {},
    dial: async (domain, id) => {
      throw new QvmError("NOT_FOUND", `${domain} has no window ${id}`);
    },
    resize: async (domain, id, w, h) => log(`window-resize ${domain}/${id} ${w}x${h}: this shell has no windows`),
    close: async (domain, id) => log(`window-close ${domain}/${id}: this shell has no windows`),
  };
}

/** A window list held in memory (tests): `set` replaces it and tells the watchers. */
export interface StaticWindows extends WindowBackend {
  set(windows: WindowSummary[]): void;
  resized: { domain: string; window: number; width: number; height: number }[];
  closed: { domain: string; window: number }[];
}

export function staticWindows(initial: WindowSummary[], dialer: WindowDialer): StaticWindows {
  let windows = [...initial];
  const watchers = new Set<() => void>();
  const self: StaticWindows = {
    resized: [],
    closed: [],
    list: async () => [...windows],
    watch: (fn) => {
      watchers.add(fn);
      return () => watchers.delete(fn);
    },
    dial: (domain, id) => dialer.dial(domain, id),
    resize: async (domain, window, width, height) => {
      self.resized.push({ domain, window, width, height });
    },
    close: async (domain, window) => {
      self.closed.push({ domain, window });
      self.set(windows.filter((w) => !(w.domain === domain && w.id === window)));
    },
    set: (next) => {
      windows = [...next];
      for (const fn of watchers) fn();
    },
  };
  return self;
}

/** Connects a Unix socket where the RFB server itself listens (wayvnc -u; tests with no VM). */
export function unixSocketDialer(socketOf: (domain: string, windowId: number) => string | undefined): WindowDialer {
  return {
    dial: (domain, id) => {
      const at = socketOf(domain, id);
      if (!at) return Promise.reject(new QvmError("NOT_FOUND", `${domain} has no window ${id}`));
      return new Promise((resolve, reject) => {
        const sock = net.connect(at);
        const fail = (err: Error) => reject(new QvmError("AGENT_UNAVAILABLE", `window ${domain}/${id}: ${err.message}`));
        sock.once("error", fail);
        sock.once("connect", () => {
          sock.off("error", fail);
          resolve(sock);
        });
      });
    },
  };
}

/** Where a window's RFB server is, in a domain's hybrid vsock: its VMM's Unix socket and the guest port. */
export interface VsockTarget {
  /** The domain's hybrid vsock socket (vhost-device-vsock's `uds-path`). */
  vsockPath: string;
  /** The guest vsock port its per-window RFB server listens on (from OpenWindow). */
  port: number;
}

/** The real dialer: `lookup` says where the window listens (from qvmd), `dialHybridVsock` connects. */
export function hybridVsockDialer(lookup: (domain: string, windowId: number) => Promise<VsockTarget>, timeoutMs?: number): WindowDialer {
  return {
    dial: async (domain, id) => {
      const { vsockPath, port } = await lookup(domain, id);
      return dialHybridVsock(vsockPath, port, timeoutMs);
    },
  };
}

/** The device's answer to CONNECT is at most this long. */
const MAX_HANDSHAKE_BYTES = 64;
const OK_REPLY = /^OK \d{1,10}$/;
/**
 * How long a dial that timed out keeps its socket for a late answer: vhost-device-vsock 0.3 takes
 * down every vsock stream of the VM when the guest accepts a connection whose host end is already
 * closed (host-agent/src/vsock/hybrid-dial.ts has the story).
 */
const ABANDONED_DIAL_LINGER_MS = 5 * 60_000;

/**
 * Hybrid vsock, host side (vhost-device-vsock, cloud-hypervisor, Firecracker): connect the VMM's
 * Unix socket, write `CONNECT <port>\n`, read `OK <n>\n`; after that the socket is the guest's
 * vsock stream. A small copy of host-agent's dialer: the web shell imports no host-agent code.
 */
export function dialHybridVsock(vsockPath: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) return Promise.reject(new QvmError("INVALID_ARGUMENT", `invalid vsock port ${port}`));
  return new Promise((resolve, reject) => {
    const sock = net.connect(vsockPath);
    let buffered = Buffer.alloc(0);
    let done = false;
    let lingering = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off("data", onData);
      sock.pause();
      if (!err) return resolve(sock);
      if (lingering) linger(sock);
      else sock.destroy();
      reject(err);
    };
    const timer = setTimeout(() => {
      lingering = true;
      finish(new QvmError("AGENT_TIMEOUT", `no answer to CONNECT ${port} on ${vsockPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) {
        if (buffered.length > MAX_HANDSHAKE_BYTES) finish(new QvmError("AGENT_PROTOCOL", `oversized vsock handshake reply on ${vsockPath}`));
        return;
      }
      const line = buffered.subarray(0, nl).toString("latin1");
      if (nl > MAX_HANDSHAKE_BYTES || !OK_REPLY.test(line)) {
        finish(new QvmError("AGENT_PROTOCOL", `unexpected vsock handshake reply on ${vsockPath}: ${JSON.stringify(line.slice(0, 32))}`));
        return;
      }
      const rest = buffered.subarray(nl + 1);
      finish();
      // Bytes that came with the OK line are the stream's first (an RFB server speaks first).
      if (rest.length) sock.unshift(rest);
    };
    sock.on("data", onData);
    sock.once("connect", () => sock.write(`CONNECT ${port}\n`));
    sock.once("error", (err: NodeJS.ErrnoException) =>
      finish(
        new QvmError(
          "AGENT_UNAVAILABLE",
          err.code === "ENOENT" || err.code === "ECONNREFUSED" ? `vsock socket ${vsockPath} is not accepting connections (is the domain running?)` : `vsock connection to ${vsockPath} failed: ${err.message}`,
        ),
      ),
    );
    // The device closes the connection when nothing listens on the guest port.
    sock.once("close", () => finish(new QvmError("AGENT_UNAVAILABLE", `nothing listens on guest vsock port ${port} (${vsockPath})`)));
  });
}

function linger(sock: net.Socket): void {
  const cap = setTimeout(() => sock.destroy(), ABANDONED_DIAL_LINGER_MS);
  cap.unref();
  sock.once("close", () => clearTimeout(cap));
  sock.on("error", () => {});
  sock.once("data", () => sock.end());
  sock.resume();
}
