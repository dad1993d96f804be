// A window's display stream (docs/gui.md): bytes between the window's sandboxed frame (noVNC, on
// a WebSocket opened with a one-shot ticket) and the domain's RFB server (a stream from the
// WindowDialer). Nothing here parses RFB: the host copies bytes, the sandboxed frame decodes them.
// Both directions are held back like the terminals: when more than HIGH_WATER waits for the
// browser, the domain's stream is paused until it drains below LOW_WATER; when the domain stops
// reading, the frame's WebSocket is paused.
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";

/** Browser output queued beyond this pauses the domain's stream until it drains below LOW. */
export const DISPLAY_HIGH_WATER = 1024 * 1024;
export const DISPLAY_LOW_WATER = 256 * 1024;
/** Largest WebSocket message a frame may send (noVNC's are a few bytes; a clipboard at most 64 KB). */
export const MAX_DISPLAY_MESSAGE = 1024 * 1024;

export interface Relay {
  readonly domain: string;
  readonly window: number;
  /** Ends both sides; `onEnd` is called once, with the first reason. */
  close(reason: string): void;
}

/** `onEnd` hears why the relay ended, with the stream's error when it failed. */
export function relay(domain: string, window: number, ws: WebSocket, stream: Duplex, onEnd: (reason: string, err?: Error) => void): Relay {
  let ended = false;
  let drainTimer: NodeJS.Timeout | undefined;
  const end = (reason: string, code = 1000, err?: Error) => {
    if (ended) return;
    ended = true;
    clearInterval(drainTimer);
    stream.destroy();
    // A close reason is at most 123 bytes.
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, Buffer.from(reason).subarray(0, 120).toString());
    onEnd(reason, err);
  };

  // Domain → browser.
  stream.on("data", (chunk: Buffer) => {
    if (ended) return;
    ws.send(chunk, { binary: true });
    if (!drainTimer && ws.bufferedAmount > DISPLAY_HIGH_WATER) {
      stream.pause();
      drainTimer = setInterval(() => {
        if (ended || ws.bufferedAmount < DISPLAY_LOW_WATER) {
          clearInterval(drainTimer);
          drainTimer = undefined;
          if (!ended) stream.resume();
        }
      }, 20);
    }
  });
  stream.on("end", () => end("the window's stream ended"));
  stream.on("close", () => end("the window's stream closed"));
  stream.on("error", (err: Error) => end(`the window's stream failed: ${err.message}`, 1011, err));

  // Browser → domain.
  ws.on("message", (data: Buffer) => {
    if (ended) return;
    if (!stream.write(data) && !ws.isPaused) {
      ws.pause();
      stream.once("drain", () => ws.resume());
    }
  });
  ws.on("close", () => end("the frame closed"));
  ws.on("error", () => end("the frame's connection failed"));
  stream.resume();
  return { domain, window, close: (reason) => end(reason) };
}
