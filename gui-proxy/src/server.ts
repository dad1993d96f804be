// The web shell's server: static files of the page and one WebSocket per browser tab, on
// loopback only. The page is public (it holds no secret); the WebSocket needs the token (access.ts). The page is the trusted part: it draws every
// window frame, title and label color from qvmd's data; domains only ever fill terminals.
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { WebSocketServer } from "ws";
import { AdminClient } from "@qvm/protocol";
import { SHELL_PROTOCOL, allowedHosts, allowedOrigins, createToken, isLoopbackHost, offeredProtocols, offeredToken, requestHost, sameToken } from "./access.js";
import { ShellSession } from "./session.js";

export interface ShellServerOptions {
  admin: AdminClient;
  /** Where the built page lives (gui-proxy/dist/web). */
  webDir: string;
  host?: string;
  port?: number;
  token?: string;
  log?: (m: string) => void;
}

export interface ShellServer {
  url: string;
  token: string;
  port: number;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };
/** The page's files; nothing else is ever served. */
const FILES = ["index.html", "app.js", "app.css"];
const MAX_WS_MESSAGE = 1024 * 1024;

const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cache-Control": "no-store",
};

export async function startShellServer(opts: ShellServerOptions): Promise<ShellServer> {
  const host = opts.host ?? "127.0.0.1";
  if (!isLoopbackHost(host)) throw new Error(`the web shell listens on loopback only (127.0.0.1, ::1, localhost), not ${JSON.stringify(host)}`);
  for (const f of FILES) {
    if (!existsSync(path.join(opts.webDir, f))) throw new Error(`${path.join(opts.webDir, f)} is missing: run \`node scripts/build.mjs\` in the qvm checkout`);
  }
  const token = opts.token ?? createToken();
  const log = opts.log ?? (() => {});
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
    const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
    if (!FILES.includes(file)) return refuse(404, "not found");
    // Static and public: the token is never needed here, and never set as a cookie.
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream", ...SECURITY_HEADERS });
    res.end(req.method === "HEAD" ? undefined : readFileSync(path.join(opts.webDir, file)));
  });

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_WS_MESSAGE,
    // Select our protocol name, never the one carrying the token (it is not echoed back).
    handleProtocols: (protocols) => (protocols.has(SHELL_PROTOCOL) ? SHELL_PROTOCOL : false),
  });
  server.on("upgrade", (req, socket, head) => {
    const origin = req.headers.origin ?? "";
    const deny = (status: string, why: string) => {
      log(`refused a WebSocket: ${why}`);
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (!hosts.includes(requestHost(req))) return deny("421 Misdirected Request", `Host ${JSON.stringify(req.headers.host ?? "").slice(0, 100)} is not this server`);
    if (new URL(req.url ?? "/", "http://x").pathname !== "/ws") return deny("403 Forbidden", "not /ws");
    if (!origins.includes(origin)) return deny("403 Forbidden", `origin ${JSON.stringify(origin).slice(0, 100)} is not this page's`);
    if (!offeredProtocols(req).includes(SHELL_PROTOCOL)) return deny("403 Forbidden", `no ${SHELL_PROTOCOL} subprotocol`);
    if (!sameToken(offeredToken(req), token)) return deny("403 Forbidden", "no valid token");
    wss.handleUpgrade(req, socket, head, (ws) => new ShellSession(ws, opts.admin, log));
  });

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
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
