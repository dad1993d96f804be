// Bounds on a domain's windows (the agent's OpenWindow/ResizeWindow, docs/gui.md): the guest
// agent refuses requests outside them, and the host refuses replies outside them. A window's
// RFB stream is offered on a guest vsock port in a fixed range, which the host dials through
// hybrid vsock (`CONNECT <port>`). Dependency-free.

/** Live windows one domain may hold at once. */
export const MAX_WINDOWS_PER_DOMAIN = 8;
/** A window's output size in pixels, inclusive. */
export const WINDOW_MIN_WIDTH = 64;
export const WINDOW_MAX_WIDTH = 3840;
export const WINDOW_MIN_HEIGHT = 64;
export const WINDOW_MAX_HEIGHT = 2160;
/** Windows' vsock ports are WINDOW_VSOCK_PORT_BASE + n, n < WINDOW_VSOCK_PORT_COUNT, handed out round-robin. */
export const WINDOW_VSOCK_PORT_BASE = 20000;
export const WINDOW_VSOCK_PORT_COUNT = 256;

export function isWindowWidth(n: unknown): n is number {
  return Number.isInteger(n) && (n as number) >= WINDOW_MIN_WIDTH && (n as number) <= WINDOW_MAX_WIDTH;
}

export function isWindowHeight(n: unknown): n is number {
  return Number.isInteger(n) && (n as number) >= WINDOW_MIN_HEIGHT && (n as number) <= WINDOW_MAX_HEIGHT;
}

export function isWindowVsockPort(n: unknown): n is number {
  return Number.isInteger(n) && (n as number) >= WINDOW_VSOCK_PORT_BASE && (n as number) < WINDOW_VSOCK_PORT_BASE + WINDOW_VSOCK_PORT_COUNT;
}

/** Why a size is refused ("" when it is within bounds), for error messages on both sides. */
export function windowSizeProblem(width: unknown, height: unknown): string {
  if (isWindowWidth(width) && isWindowHeight(height)) return "";
  return `window size ${String(width)}x${String(height)} is out of bounds (${WINDOW_MIN_WIDTH}..${WINDOW_MAX_WIDTH} x ${WINDOW_MIN_HEIGHT}..${WINDOW_MAX_HEIGHT})`;
}

/**
 * Most bytes the global clipboard holds (Qubes' max_clipboard_size default): a larger copy
 * empties it and fails, and a guest reply larger than this is refused.
 */
export const MAX_CLIPBOARD_BYTES = 64000;
/** Where a paste is refused, the message names both domains as Qubes' does. */
export function pasteDeniedMessage(source: string, target: string): string {
  return `Pasting from ${source} to ${target} is denied by policies`;
}
