// The window seam (docs/gui.md): what the web shell needs from whoever knows the domains' windows.
// A window is (domain, window id); its pixels come from an RFB server in the domain (a headless
// sway + wayvnc per window), reached as a byte stream. The shell relays those bytes to the
// window's sandboxed frame and parses none of them.
//
// `qvm shell` uses adminWindows (admin-windows.ts: qvmd's admin API, where qvmd dials the window);
// a server started without a backend has `noWindows`; tests use `staticWindows` with
// `unixSocketDialer`.
import net from "node:net";
import type { Duplex } from "node:stream";
import { QvmError, type WindowSummary } from "@qvm/protocol/contracts";

/** Opens a byte stream to a window's RFB server. */
export interface WindowDialer {
  /** Resolves once the stream is connected (any handshake done): every byte after is RFB. */
  dial(domain: string, windowId: number): Promise<Duplex>;
}

/**
 * What a watcher of the window list hears: `changed`, the list may differ; `lost`, qvmd went
 * away (every window stream through it ends; the programs run on in their domains); `back`, qvmd
 * answers again after a restart (the list may differ, and may fill in over the next seconds as
 * qvmd re-attaches the running domains and learns their windows again).
 */
export type WindowChange = "changed" | "lost" | "back";

/** Everything the shell asks about windows; one per server, shared by its pages. */
export interface WindowBackend extends WindowDialer {
  /** Every window qvmd knows of (domain, id, program, size). */
  list(): Promise<WindowSummary[]>;
  /** Calls `onChange` whenever the list may have changed or qvmd went or came back; returns the unsubscribe. */
  watch(onChange: (change: WindowChange) => void): () => void;
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

/**
 * A window list held in memory (tests): `set` replaces it and tells the watchers; `lose` and
 * `back` play a qvmd restart (the list is empty while qvmd is away).
 */
export interface StaticWindows extends WindowBackend {
  set(windows: WindowSummary[]): void;
  /** qvmd went away: the watchers hear `lost`, and `list` fails until `back`. */
  lose(): void;
  /** qvmd is back with `windows` (default: none yet): the watchers hear `back`. */
  back(windows?: WindowSummary[]): void;
  resized: { domain: string; window: number; width: number; height: number }[];
  closed: { domain: string; window: number }[];
}

export function staticWindows(initial: WindowSummary[], dialer: WindowDialer): StaticWindows {
  let windows = [...initial];
  let away = false;
  const watchers = new Set<(change: WindowChange) => void>();
  const tell = (change: WindowChange) => {
    for (const fn of [...watchers]) fn(change);
  };
  const self: StaticWindows = {
    resized: [],
    closed: [],
    list: async () => {
      if (away) throw new QvmError("DAEMON_UNAVAILABLE", "qvmd is not reachable (a test's restart)");
      return [...windows];
    },
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
      tell("changed");
    },
    lose: () => {
      away = true;
      tell("lost");
    },
    back: (next = []) => {
      away = false;
      windows = [...next];
      tell("back");
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
