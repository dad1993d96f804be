// Who may use the web shell: whoever holds the token `qvm shell` printed. The URL carries it in
// its fragment (`#token=…`), which a browser never sends to any server; the page moves it into
// sessionStorage (scoped to this origin, port included) and offers it when it opens the
// WebSocket, as a subprotocol. No cookie: cookies are not isolated by port (RFC 6265 §8.5), so
// one would reach every other service on 127.0.0.1.
//
// The page's files are static and public; only the WebSocket (everything that touches a domain)
// needs the token. Every request must name this server in `Host` (a loopback address and this
// port: a DNS-rebound name is refused), and a WebSocket upgrade must also come from a page this
// server served (`Origin`). Nothing is sent with CORS headers; the server listens on loopback only.
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

/** The subprotocol the server selects; the page offers it next to the one carrying the token. */
export const SHELL_PROTOCOL = "qvm-shell.v1";
/** The page offers `qvm-token.<token>` as a second subprotocol; the server never echoes it. */
export const TOKEN_PROTOCOL_PREFIX = "qvm-token.";

export function createToken(): string {
  // base64url: letters, digits, "-" and "_", all valid in a subprotocol name (an HTTP token).
  return randomBytes(32).toString("base64url");
}

export function sameToken(given: string | undefined, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The subprotocols a WebSocket upgrade offers (`Sec-WebSocket-Protocol`, comma-separated). */
export function offeredProtocols(req: IncomingMessage): string[] {
  const h = req.headers["sec-websocket-protocol"];
  return (Array.isArray(h) ? h.join(",") : (h ?? ""))
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
}

/** The token a WebSocket upgrade offers as a subprotocol, if any (never from a URL or a cookie). */
export function offeredToken(req: IncomingMessage): string | undefined {
  return offeredProtocols(req)
    .find((p) => p.startsWith(TOKEN_PROTOCOL_PREFIX))
    ?.slice(TOKEN_PROTOCOL_PREFIX.length);
}

/** Loopback host names a listen address may use; anything else would expose the shell. */
export function isLoopbackHost(host: string): boolean {
  return host === "127.0.0.1" || host === "::1" || host === "localhost";
}

/**
 * The `Host` values naming this server: the loopback address it is bound to, or `localhost`,
 * with its port. A browser sends the name it was given, so a rebound DNS name never matches.
 */
export function allowedHosts(boundAddress: string, port: number): string[] {
  const addr = boundAddress.includes(":") ? `[${boundAddress}]` : boundAddress;
  return [`${addr}:${port}`, `localhost:${port}`];
}

/** The origins a page served by this server has: the only ones allowed to open its WebSocket. */
export function allowedOrigins(boundAddress: string, port: number): string[] {
  return allowedHosts(boundAddress, port).map((h) => `http://${h}`);
}

/** The request's `Host`, lower-cased, or "" when absent. */
export function requestHost(req: IncomingMessage): string {
  return (req.headers.host ?? "").toLowerCase();
}
