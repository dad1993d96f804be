// The web shell's server: static files of the page and one WebSocket per browser tab, on
// loopback only, behind the token (access.ts). The page is the trusted part: it draws every
// window frame, title and label color from qvmd's data; domains only ever fill terminals.
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { WebSocketServer } from "ws";
import { AdminClient } from "@qvm/protocol";
import { TOKEN_COOKIE, allowedOrigins, createToken, isLoopbackHost, requestToken, sameToken } from "./access.js";
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
  let port = 0;

  const server = http.createServer((req, res) => {
    const refuse = (code: number, text: string) => {
      res.writeHead(code, { "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
      res.end(`${text}\n`);
    };
    if (req.method !== "GET") return refuse(405, "only GET");
    if (!sameToken(requestToken(req), token)) return refuse(403, "forbidden: open the URL that `qvm shell` printed (it carries the access token)");
    const url = new URL(req.url ?? "/", "http://x");
    const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
    if (!FILES.includes(file)) return refuse(404, "not found");
    res.writeHead(200, {
      "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream",
      // The URL's token becomes a cookie, so the page's own requests and WebSocket carry it.
      "Set-Cookie": `${TOKEN_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`,
      ...SECURITY_HEADERS,
    });
    res.end(readFileSync(path.join(opts.webDir, file)));
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE });
  server.on("upgrade", (req, socket, head) => {
    const origin = req.headers.origin ?? "";
    const deny = (why: string) => {
      log(`refused a WebSocket: ${why}`);
      socket.end("HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n");
    };
    if (new URL(req.url ?? "/", "http://x").pathname !== "/ws") return deny("not /ws");
    if (!sameToken(requestToken(req), token)) return deny("no valid token");
    if (!allowedOrigins(port).includes(origin)) return deny(`origin ${JSON.stringify(origin).slice(0, 100)} is not this page's`);
    wss.handleUpgrade(req, socket, head, (ws) => new ShellSession(ws, opts.admin, log));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  port = (server.address() as { port: number }).port;
  const shown = host === "::1" ? "[::1]" : host;
  return {
    url: `http://${shown}:${port}/?token=${token}`,
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
