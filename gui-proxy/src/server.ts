// The web shell's server: static files of the page and one WebSocket per browser tab, on
// loopback only. The page is public (it holds no secret); the WebSocket needs the token (access.ts). The page is the trusted part: it draws every
// window frame, title and label color from qvmd's data; domains only ever fill terminals and the
// canvases of their windows' display frames.
// Windows (docs/gui.md): each window's pixels are drawn by noVNC in `<iframe sandbox=
// "allow-scripts">` (an opaque origin), loaded from /display and connected to /display-ws with a
// one-shot ticket the page got over its authenticated WebSocket. Only /display may be framed (by
// this page); the frame's module script /display.js is sent with `Access-Control-Allow-Origin:
// null`, the one CORS header this server sends; /display-ws accepts only `Origin: null`.
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import { AdminClient } from "@qvm/protocol";
import { SHELL_PROTOCOL, allowedHosts, allowedOrigins, createToken, isLoopbackHost, offeredProtocols, offeredToken, requestHost, sameToken } from "./access.js";
import { DISPLAY_TICKET_PATTERN } from "@qvm/protocol/contracts";
import { AdminEventFeed } from "./admin-events.js";
import { noClipboard, type ClipboardBackend } from "./clipboard.js";
import { MAX_DISPLAY_MESSAGE } from "./display.js";
import { REATTACH_GRACE_MS, ShellSession, type SessionContext } from "./session.js";
import { TicketBook } from "./tickets.js";
import { noWindows, type WindowBackend } from "./windows.js";

export interface ShellServerOptions {
  admin: AdminClient;
  /** Where the built page lives (gui-proxy/dist/web). */
  webDir: string;
  host?: string;
  port?: number;
  token?: string;
  log?: (m: string) => void;
  /** The windows to show (`qvm shell`: adminWindows; default: none). */
  windows?: WindowBackend;
  /** How long a display ticket lives (default 30 s; tests shorten it). */
  ticketTtlMs?: number;
  /** The global clipboard (`qvm shell`: adminClipboard; default: none). */
  clipboard?: ClipboardBackend;
  /** After a qvmd restart, how long windows it does not list yet stay on the page (default 30 s; tests shorten it). */
  reattachGraceMs?: number;
}

export interface ShellServer {
  url: string;
  token: string;
  port: number;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };
/** The page's files; nothing else is ever served, but /display (display.html) with a live ticket. */
const FILES = ["index.html", "app.js", "app.css", "display.js"];
const DISPLAY_PAGE = "display.html";
const MAX_WS_MESSAGE = 1024 * 1024;

const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cache-Control": "no-store",
};

/**
 * Headers of /display, the window frame's page: framed only by this server's page, sandboxed even
 * if opened some other way, and allowed only its module script and its one WebSocket.
 * `host` is the request's Host, already checked to be this server.
 */
function displayHeaders(host: string): Record<string, string> {
  return {
    "Content-Security-Policy": [
      "default-src 'none'",
      `script-src http://${host}/display.js`,
      `connect-src ws://${host}/display-ws`,
      // noVNC draws JPEG rectangles and its cursor from data: URLs; it styles through the CSSOM.
      "img-src data:",
      "frame-ancestors 'self'",
      "sandbox allow-scripts",
      "base-uri 'none'",
      "form-action 'none'",
    ].join("; "),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
  };
}

/** The (domain, window, ticket) a display URL names, or undefined when malformed. */
function displayTarget(url: URL): { domain: string; window: number; ticket: string } | undefined {
  const domain = url.searchParams.get("domain") ?? "";
  const window = Number(url.searchParams.get("window"));
  const ticket = url.searchParams.get("ticket") ?? "";
  if (!domain || !Number.isInteger(window) || window < 1 || !DISPLAY_TICKET_PATTERN.test(ticket)) return undefined;
  return { domain, window, ticket };
}

export async function startShellServer(opts: ShellServerOptions): Promise<ShellServer> {
  const host = opts.host ?? "127.0.0.1";
  if (!isLoopbackHost(host)) throw new Error(`the web shell listens on loopback only (127.0.0.1, ::1, localhost), not ${JSON.stringify(host)}`);
  for (const f of [...FILES, DISPLAY_PAGE]) {
    if (!existsSync(path.join(opts.webDir, f))) throw new Error(`${path.join(opts.webDir, f)} is missing: run \`node scripts/build.mjs\` in the qvm checkout`);
  }
  const token = opts.token ?? createToken();
  const log = opts.log ?? (() => {});
  const ctx: SessionContext = {
    windows: opts.windows ?? noWindows(log),
    tickets: new TicketBook<ShellSession>({ ttlMs: opts.ticketTtlMs }),
    clipboard: opts.clipboard ?? noClipboard(),
    // One feed of qvmd's events for every page, subscribed again after a qvmd restart.
    events: new AdminEventFeed(opts.admin),
    reattachGraceMs: opts.reattachGraceMs ?? REATTACH_GRACE_MS,
  };
  // Known once listening: the address actually bound (localhost resolves to 127.0.0.1 or ::1).
  let hosts: string[] = [];
  let origins: string[] = [];

  const server = http.createServer((req, res) => {
    const refuse = (code: number, text: string) => {
      res.writeHead(code, { "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
      res.end(`${text}\n`);
    };
    if (!hosts.includes(requestHost(req))) return refuse(421, `misdirected: this is the qvm web shell at ${hosts[0]}, not ${JSON.stringify(req.headers.host ?? "").slice(0, 100)}`);
    if (req.method !== "GET" && req.method !== "HEAD") return refuse(405, "only GET");
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/display") {
      // A window's frame: only with a live ticket for the window it names (not used up here: the
      // frame's WebSocket uses it), and only as a frame when the browser says so.
      const target = displayTarget(url);
      const t = target && ctx.tickets.peek(target.ticket);
      if (!target || !t || t.domain !== target.domain || t.window !== target.window) return refuse(403, "no valid display ticket");
      const dest = req.headers["sec-fetch-dest"];
      if (dest !== undefined && dest !== "iframe") return refuse(403, "the display page is only a frame of the web shell");
      res.writeHead(200, { "Content-Type": TYPES[".html"]!, ...displayHeaders(requestHost(req)) });
      res.end(req.method === "HEAD" ? undefined : readFileSync(path.join(opts.webDir, DISPLAY_PAGE)));
      return;
    }
    const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
    if (!FILES.includes(file)) return refuse(404, "not found");
    // Static and public: the token is never needed here, and never set as a cookie. The display
    // frame's script is fetched from an opaque origin (a CORS request with `Origin: null`).
    const cors = file === "display.js" ? { "Access-Control-Allow-Origin": "null" } : {};
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream", ...SECURITY_HEADERS, ...cors });
    res.end(req.method === "HEAD" ? undefined : readFileSync(path.join(opts.webDir, file)));
  });

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_WS_MESSAGE,
    // Select our protocol name, never the one carrying the token (it is not echoed back).
    handleProtocols: (protocols) => (protocols.has(SHELL_PROTOCOL) ? SHELL_PROTOCOL : false),
  });
  // Display WebSockets carry RFB bytes only; noVNC offers no subprotocol.
  const displayWss = new WebSocketServer({ noServer: true, maxPayload: MAX_DISPLAY_MESSAGE, perMessageDeflate: false });
  server.on("upgrade", (req, socket, head) => {
    const origin = req.headers.origin ?? "";
    const deny = (status: string, why: string) => {
      log(`refused a WebSocket: ${why}`);
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (!hosts.includes(requestHost(req))) return deny("421 Misdirected Request", `Host ${JSON.stringify(req.headers.host ?? "").slice(0, 100)} is not this server`);
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/display-ws") return void upgradeDisplay(req, socket, head, url, deny);
    if (url.pathname !== "/ws") return deny("403 Forbidden", "not /ws");
    if (!origins.includes(origin)) return deny("403 Forbidden", `origin ${JSON.stringify(origin).slice(0, 100)} is not this page's`);
    if (!offeredProtocols(req).includes(SHELL_PROTOCOL)) return deny("403 Forbidden", `no ${SHELL_PROTOCOL} subprotocol`);
    if (!sameToken(offeredToken(req), token)) return deny("403 Forbidden", "no valid token");
    wss.handleUpgrade(req, socket, head, (ws) => new ShellSession(ws, opts.admin, log, ctx));
  });

  /**
   * A window frame's WebSocket: from an opaque origin (the sandboxed frame sends `Origin: null`),
   * with a ticket for exactly the window it names, used up here whatever follows. The window's
   * stream is dialled before the upgrade is answered, and belongs to the page that got the ticket.
   */
  async function upgradeDisplay(req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL, deny: (status: string, why: string) => void) {
    socket.on("error", () => {});
    if (req.headers.origin !== "null") return deny("403 Forbidden", `display origin ${JSON.stringify(req.headers.origin ?? "").slice(0, 100)} is not a sandboxed frame's`);
    const target = displayTarget(url);
    const t = target && ctx.tickets.take(target.ticket);
    if (!target || !t) return deny("403 Forbidden", "no valid display ticket (missing, used, expired or from elsewhere)");
    if (t.domain !== target.domain || t.window !== target.window) return deny("403 Forbidden", `the ticket is for another window than ${target.domain}/${target.window}`);
    const slot = t.owner.reserveDisplay(t.domain, t.window);
    if (typeof slot === "string") return deny("429 Too Many Requests", slot);
    let stream;
    try {
      stream = await ctx.windows.dial(t.domain, t.window);
    } catch (err) {
      t.owner.displayFailed(slot, err);
      return deny("502 Bad Gateway", `window ${t.domain}/${t.window}: ${(err as Error).message}`);
    }
    if (socket.destroyed || t.owner.isClosed) {
      stream.destroy();
      slot.release();
      return socket.destroy();
    }
    displayWss.handleUpgrade(req, socket, head, (ws) => t.owner.attachDisplay(slot, ws, stream));
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const bound = server.address() as { address: string; port: number };
  const port = bound.port;
  hosts = allowedHosts(bound.address, port);
  origins = allowedOrigins(bound.address, port);
  return {
    // The token rides the fragment: browsers never send it, in requests or in Referer.
    url: `http://${hosts[0]}/#token=${token}`,
    token,
    port,
    close: () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        for (const c of displayWss.clients) c.terminate();
        wss.close();
        displayWss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
