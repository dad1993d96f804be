// Windows in the web shell server (docs/gui.md), with no VM and no browser: display tickets (one
// use, short-lived, for one window, for the page that asked), the display routes' headers, the
// relay (bytes untouched both ways, held back when the browser lags), bounds, resize and close
// passed to the window backend, and the hybrid vsock dialer against a fake VMM socket.
// The windows' RFB servers are Unix sockets here (the test dialer); against a real sway + wayvnc
// and a real browser: tests/e2e/gui-windows.test.ts.
import { domainClassFromWord } from "@qvm/protocol";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { SHELL_PROTOCOL, TOKEN_PROTOCOL_PREFIX } from "./access.js";
import { DISPLAY_HIGH_WATER } from "./display.js";
import { startShellServer, type ShellServer } from "./server.js";
import { MAX_DISPLAYS_PER_DOMAIN } from "./session.js";
import { MAX_TICKETS_PER_OWNER, TicketBook } from "./tickets.js";
import { staticWindows, unixSocketDialer, type StaticWindows } from "./windows.js";

const TTL_MS = 1500;
let d: TestDaemon;
let shell: ShellServer;
let backend: StaticWindows;
const tmp = mkdtempSync(path.join(os.tmpdir(), "qvm-display-"));
const dirs = testDaemonDirs("display");

/** A stand-in RFB server on a Unix socket: greets like one, records what it gets, can flood. */
interface FakeRfb {
  path: string;
  received: Buffer[];
  conns: net.Socket[];
  server: net.Server;
}

function fakeRfb(name: string): Promise<FakeRfb> {
  const f: FakeRfb = { path: path.join(tmp, `${name}.sock`), received: [], conns: [], server: net.createServer() };
  f.server.on("connection", (c) => {
    f.conns.push(c);
    c.on("data", (b: Buffer) => f.received.push(b));
    c.on("error", () => {});
    c.write("RFB 003.008\n");
  });
  return new Promise((resolve) => f.server.listen(f.path, () => resolve(f)));
}

let rfb1: FakeRfb;
let rfb2: FakeRfb;

beforeAll(async () => {
  d = await startTestDaemon(dirs);
  const webDir = path.join(tmp, "web");
  mkdirSync(webDir);
  for (const f of ["index.html", "app.js", "app.css", "display.html", "display.js"]) writeFileSync(path.join(webDir, f), `/* ${f} */`);
  await d.client.createDomain({ name: "work", class: domainClassFromWord("StandaloneVM"), template: "", label: "blue", properties: {} });
  rfb1 = await fakeRfb("w1");
  rfb2 = await fakeRfb("w2");
  const sockets: Record<string, string> = { "work/1": rfb1.path, "work/2": rfb2.path, "work/3": path.join(tmp, "nothing.sock") };
  backend = staticWindows(
    [
      { domain: "work", id: 1, program: "foot", width: 640, height: 400 },
      { domain: "work", id: 2, program: "flood", width: 320, height: 200 },
      { domain: "work", id: 3, program: "gone", width: 320, height: 200 },
    ],
    unixSocketDialer((dom, id) => sockets[`${dom}/${id}`]),
  );
  shell = await startShellServer({ admin: d.client, webDir, windows: backend, ticketTtlMs: TTL_MS });
});

afterAll(async () => {
  await shell?.close();
  await d?.stop();
  removeTestDaemonDirs(dirs);
  for (const f of [rfb1, rfb2]) {
    for (const c of f?.conns ?? []) c.destroy();
    f?.server.close();
  }
  rmSync(tmp, { recursive: true, force: true });
});

const base = () => `http://127.0.0.1:${shell.port}`;

/** The page's authenticated WebSocket, with every message it got. */
async function page(): Promise<{ ws: WebSocket; got: Record<string, unknown>[]; next(t: string, match?: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${shell.port}/ws`, [SHELL_PROTOCOL, `${TOKEN_PROTOCOL_PREFIX}${shell.token}`], { headers: { Origin: base() } });
  const got: Record<string, unknown>[] = [];
  const waiters: { t: string; match: (m: Record<string, unknown>) => boolean; resolve: (m: Record<string, unknown>) => void }[] = [];
  ws.on("message", (data, binary) => {
    if (binary) return;
    const m = JSON.parse(String(data)) as Record<string, unknown>;
    got.push(m);
    for (const w of [...waiters]) {
      if (w.t === m.t && w.match(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  await new Promise((r) => ws.once("open", r));
  return {
    ws,
    got,
    next: (t, match = () => true) =>
      new Promise((resolve) => {
        const old = got.find((m) => m.t === t && match(m));
        if (old) {
          got.splice(got.indexOf(old), 1);
          return resolve(old);
        }
        waiters.push({ t, match, resolve: (m) => (got.splice(got.indexOf(m), 1), resolve(m)) });
      }),
  };
}

async function ticketFor(p: Awaited<ReturnType<typeof page>>, domain: string, window: number): Promise<string> {
  p.ws.send(JSON.stringify({ t: "window-ticket", domain, window }));
  return (await p.next("window-ticket", (m) => m.domain === domain && m.window === window)).ticket as string;
}

function displayUrl(domain: string, window: number, ticket: string, route = "/display-ws"): string {
  return `${route}?${new URLSearchParams({ domain, window: String(window), ticket })}`;
}

/** A display WebSocket as the sandboxed frame opens it (Origin: null unless told otherwise). */
function display(urlPath: string, headers: Record<string, string> = { Origin: "null" }): Promise<{ ws?: WebSocket; status?: number; first?: Buffer }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${shell.port}${urlPath}`, { headers });
    ws.once("unexpected-response", (_req, res) => resolve({ status: res.statusCode }));
    ws.once("error", () => resolve({ status: -1 }));
    ws.once("message", (data) => resolve({ ws, first: data as Buffer }));
  });
}

function get(urlPath: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port: shell.port, path: urlPath, headers: { Host: `127.0.0.1:${shell.port}`, ...headers } }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      })
      .on("error", reject);
  });
}

describe("display tickets", () => {
  it("are used once, expire, are bounded per page and revoked with it", () => {
    let now = 1000;
    const book = new TicketBook<string>({ ttlMs: 100, now: () => now });
    const t = book.mint("work", 1, "page-a");
    expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(book.peek(t)).toMatchObject({ domain: "work", window: 1, owner: "page-a" });
    expect(book.take(t)).toMatchObject({ domain: "work", window: 1 });
    expect(book.take(t)).toBeUndefined();
    const late = book.mint("work", 1, "page-a");
    now += 100;
    expect(book.peek(late)).toBeUndefined();
    expect(book.take(late)).toBeUndefined();
    const many = Array.from({ length: MAX_TICKETS_PER_OWNER + 4 }, () => book.mint("work", 2, "page-a"));
    const other = book.mint("work", 2, "page-b");
    expect(many.filter((x) => book.peek(x)).length).toBe(MAX_TICKETS_PER_OWNER);
    expect(book.peek(many[0]!)).toBeUndefined(); // the oldest went
    book.revoke("page-a");
    expect(many.some((x) => book.peek(x))).toBe(false);
    expect(book.peek(other)).toBeDefined();
  });
});

describe("display routes and relay", () => {
  it("sends qvmd's window list to the page at connect", async () => {
    const p = await page();
    expect((await p.next("windows")).windows).toEqual([
      { domain: "work", id: 1, program: "foot", width: 640, height: 400 },
      { domain: "work", id: 2, program: "flood", width: 320, height: 200 },
      { domain: "work", id: 3, program: "gone", width: 320, height: 200 },
    ]);
    p.ws.close();
  });

  it("serves /display only with a live ticket for the window it names, framable by this page only", async () => {
    const p = await page();
    const t = await ticketFor(p, "work", 1);
    const ok = await get(displayUrl("work", 1, t, "/display"), { "Sec-Fetch-Dest": "iframe" });
    expect(ok.status).toBe(200);
    const csp = String(ok.headers["content-security-policy"]);
    expect(csp).toContain("frame-ancestors 'self'");
    expect(csp).toContain("sandbox allow-scripts");
    expect(csp).toContain(`script-src http://127.0.0.1:${shell.port}/display.js`);
    expect(csp).toContain(`connect-src ws://127.0.0.1:${shell.port}/display-ws`);
    expect(ok.headers["x-frame-options"]).toBeUndefined();
    expect(ok.headers["access-control-allow-origin"]).toBeUndefined();
    for (const [why, url, headers] of [
      ["no ticket", "/display?domain=work&window=1", {}],
      ["another window's", displayUrl("work", 2, t, "/display"), {}],
      ["a made-up ticket", displayUrl("work", 1, "A".repeat(43), "/display"), {}],
      ["a top-level load", displayUrl("work", 1, t, "/display"), { "Sec-Fetch-Dest": "document" }],
    ] as const) {
      const r = await get(url, headers);
      expect(r.status, why).toBe(403);
      expect(r.headers["x-frame-options"], why).toBe("DENY");
    }
    // The frame's module script is fetched from an opaque origin; nothing else gets CORS headers.
    const js = await get("/display.js", { Origin: "null" });
    expect(js.headers["access-control-allow-origin"]).toBe("null");
    expect(js.headers["x-frame-options"]).toBe("DENY");
    for (const f of ["/", "/app.js", "/app.css"]) {
      const r = await get(f);
      expect(r.headers["access-control-allow-origin"], f).toBeUndefined();
      expect(r.headers["x-frame-options"], f).toBe("DENY");
      expect(String(r.headers["content-security-policy"]), f).toContain("frame-ancestors 'none'");
    }
    // Loading the page did not use the ticket up: the frame's WebSocket still can.
    const good = await display(displayUrl("work", 1, t));
    expect(good.first?.toString()).toBe("RFB 003.008\n");
    good.ws!.close();
    p.ws.close();
  });

  it("refuses a display WebSocket with a reused, expired, foreign or missing ticket, or from any Origin but a sandboxed frame's", async () => {
    const p = await page();
    const used = await ticketFor(p, "work", 1);
    const ok = await display(displayUrl("work", 1, used));
    expect(ok.first?.toString()).toBe("RFB 003.008\n");
    ok.ws!.close();
    expect((await display(displayUrl("work", 1, used))).status).toBe(403); // reused

    // Any Origin but "null" is refused, and the ticket is not used up by that.
    const t = await ticketFor(p, "work", 1);
    for (const origin of [base(), `http://localhost:${shell.port}`, "http://evil.example", "Null", ""]) {
      expect((await display(displayUrl("work", 1, t), { Origin: origin })).status, origin).toBe(403);
    }
    expect((await display(displayUrl("work", 1, t), {})).status).toBe(403); // no Origin
    expect((await display(displayUrl("work", 1, t), { Origin: "null", Host: `attacker.example:${shell.port}` })).status).toBe(421);
    const stillGood = await display(displayUrl("work", 1, t));
    expect(stillGood.first).toBeDefined();
    stillGood.ws!.close();

    // A ticket for another window is refused, and burnt by the attempt.
    const foreign = await ticketFor(p, "work", 1);
    expect((await display(displayUrl("work", 2, foreign))).status).toBe(403);
    expect((await display(displayUrl("work", 1, foreign))).status).toBe(403);
    // From another server (never minted here), malformed, or none at all.
    expect((await display(displayUrl("work", 1, "B".repeat(43)))).status).toBe(403);
    expect((await display(displayUrl("work", 1, "short")))).toMatchObject({ status: 403 });
    expect((await display("/display-ws?domain=work&window=1")).status).toBe(403);

    // Expired.
    const old = await ticketFor(p, "work", 1);
    await new Promise((r) => setTimeout(r, TTL_MS + 100));
    expect((await display(displayUrl("work", 1, old))).status).toBe(403);

    // The page that asked is gone: its tickets went with it.
    const orphan = await ticketFor(p, "work", 1);
    p.ws.close();
    await new Promise((r) => setTimeout(r, 100));
    expect((await display(displayUrl("work", 1, orphan))).status).toBe(403);
  });

  it("mints no ticket for a window qvmd does not list, and says when a window's stream cannot start", async () => {
    const p = await page();
    p.ws.send(JSON.stringify({ t: "window-ticket", domain: "work", window: 99 }));
    expect(await p.next("window-ended")).toMatchObject({ domain: "work", window: 99, reason: /no window 99/ });
    const t = await ticketFor(p, "work", 3); // listed, but nothing listens
    expect((await display(displayUrl("work", 3, t))).status).toBe(502);
    expect(await p.next("window-ended", (m) => m.window === 3)).toMatchObject({ domain: "work", reason: /window work\/3/ });
    p.ws.close();
  });

  it("relays bytes untouched both ways, and tells the page when the window's stream ends", async () => {
    const p = await page();
    const t = await ticketFor(p, "work", 1);
    const before = rfb1.conns.length;
    const { ws, first } = await display(displayUrl("work", 1, t));
    expect(first?.toString()).toBe("RFB 003.008\n");
    const bytes = Buffer.from([0, 1, 2, 0xff, 0x0a, 0x52, 0x46, 0x42]);
    rfb1.received.length = 0;
    ws!.send(bytes);
    await expect.poll(() => Buffer.concat(rfb1.received).equals(bytes)).toBe(true);
    const echoed = new Promise<Buffer>((r) => ws!.once("message", (b) => r(b as Buffer)));
    rfb1.conns[before]!.write(Buffer.from([9, 8, 7, 0]));
    expect([...(await echoed)]).toEqual([9, 8, 7, 0]);
    const closed = new Promise<number>((r) => ws!.once("close", (code) => r(code)));
    rfb1.conns[before]!.end();
    await closed;
    expect(await p.next("window-ended", (m) => m.window === 1)).toMatchObject({ domain: "work", reason: /stream (ended|closed)/ });
    p.ws.close();
  });

  it("holds a flooding window back while the browser does not read, and loses nothing", async () => {
    const p = await page();
    const t = await ticketFor(p, "work", 2);
    const before = rfb2.conns.length;
    const { ws } = await display(displayUrl("work", 2, t));
    let got = 0;
    ws!.on("message", (b: Buffer) => (got += b.length));
    ws!.pause(); // the browser falls behind: nothing more is read from its socket
    const conn = rfb2.conns[before]!;
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    let written = 0;
    let flooding = true;
    const flood = () => {
      while (flooding && conn.write(chunk)) written += chunk.length;
      if (flooding) {
        written += chunk.length;
        conn.once("drain", flood);
      }
    };
    flood();
    await new Promise((r) => setTimeout(r, 1500));
    // The relay stopped reading past its high-water mark: what the domain got to write is that
    // plus the sockets' buffers, not the ~GB it could write in 1.5 s.
    console.log(`flood: ${(written / 1048576).toFixed(1)} MiB written while the browser read nothing`);
    expect(written).toBeLessThan(DISPLAY_HIGH_WATER + 24 * 1024 * 1024);
    flooding = false;
    ws!.resume();
    // Every byte arrives (the greeting went to display()'s first-message listener).
    await expect.poll(() => got, { timeout: 15_000 }).toBe(written);
    ws!.close();
    p.ws.close();
  });

  it(`bounds the windows one page shows of one domain (${MAX_DISPLAYS_PER_DOMAIN})`, async () => {
    const p = await page();
    const open: WebSocket[] = [];
    for (let i = 0; i < MAX_DISPLAYS_PER_DOMAIN; i++) {
      const r = await display(displayUrl("work", 1, await ticketFor(p, "work", 1)));
      expect(r.ws, `display ${i}`).toBeDefined();
      open.push(r.ws!);
    }
    expect((await display(displayUrl("work", 1, await ticketFor(p, "work", 1)))).status).toBe(429);
    open.pop()!.close();
    await expect.poll(async () => {
      const r = await display(displayUrl("work", 1, await ticketFor(p, "work", 1)));
      if (r.ws) open.push(r.ws);
      return r.status ?? 101;
    }).toBe(101);
    for (const w of open) w.close();
    p.ws.close();
  });

  it("passes resize and close on to the window backend; a window that leaves the list loses its stream", async () => {
    const p = await page();
    await p.next("windows");
    p.ws.send(JSON.stringify({ t: "window-resize", domain: "work", window: 1, width: 800, height: 600 }));
    await expect.poll(() => backend.resized).toContainEqual({ domain: "work", window: 1, width: 800, height: 600 });
    p.ws.send(JSON.stringify({ t: "window-resize", domain: "work", window: 1, width: 100_000, height: 600 }));
    expect(await p.next("error")).toMatchObject({ code: "INVALID_ARGUMENT" });
    p.ws.send(JSON.stringify({ t: "window-resize", domain: "work", window: 42, width: 800, height: 600 }));
    expect(await p.next("error")).toMatchObject({ code: "NOT_FOUND" });
    const { ws } = await display(displayUrl("work", 2, await ticketFor(p, "work", 2)));
    const closed = new Promise((r) => ws!.once("close", r));
    p.ws.send(JSON.stringify({ t: "window-close", domain: "work", window: 2 }));
    await closed;
    expect(backend.closed).toContainEqual({ domain: "work", window: 2 });
    expect((await p.next("windows")).windows).not.toContainEqual(expect.objectContaining({ id: 2 }));
    expect(await p.next("window-ended", (m) => m.window === 2)).toMatchObject({ reason: "the window closed" });
    p.ws.close();
  });
});
