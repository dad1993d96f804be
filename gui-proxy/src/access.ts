// Who may use the web shell: whoever holds the token `qvm shell` printed (in the URL, then in a
// same-site cookie), from a page this server served (the Origin of WebSocket upgrades). Nothing
// is sent with CORS headers, and the server listens on loopback only (server.ts).
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

export const TOKEN_COOKIE = "qvm_shell";

export function createToken(): string {
  return randomBytes(32).toString("base64url");
}

export function sameToken(given: string | undefined, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The token a request carries: `?token=` first, else the cookie. */
export function requestToken(req: IncomingMessage): string | undefined {
  const url = new URL(req.url ?? "/", "http://x");
  const q = url.searchParams.get("token");
  if (q) return q;
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === TOKEN_COOKIE) return v.join("=");
  }
  return undefined;
}

/** Loopback host names a listen address may use; anything else would expose the shell. */
export function isLoopbackHost(host: string): boolean {
  return host === "127.0.0.1" || host === "::1" || host === "localhost";
}

/** The origins a page served by this server has: the only ones allowed to open its WebSocket. */
export function allowedOrigins(port: number): string[] {
  return [`http://127.0.0.1:${port}`, `http://localhost:${port}`, `http://[::1]:${port}`];
}
