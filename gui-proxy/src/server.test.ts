// The web shell server against a real qvmd (no VM: access control — the token on the WebSocket
// only, Host and Origin checks, no cookie —, the domain list, lifecycle errors, hostile messages). Terminals into real domains are tested in a browser in tests/e2e.
import { domainClassFromWord } from "@qvm/protocol";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import http from "node:http";
import { SHELL_PROTOCOL, TOKEN_PROTOCOL_PREFIX } from "./access.js";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { startShellServer, type ShellServer } from "./server.js";

let d: TestDaemon;
let shell: ShellServer;
let webDir = "";
const dirs = testDaemonDirs("shell");

beforeAll(async () => {
  d = await startTestDaemon(dirs);
  webDir = mkdtempSync(path.join(os.tmpdir(), "qvm-web-"));
  for (const f of ["index.html", "app.js", "app.css", "display.html", "display.js"]) writeFileSync(path.join(webDir, f), `/* ${f} */`);
  await d.client.createDomain({ name: "work", class: domainClassFromWord("AppVM"), template: "", label: "blue", properties: {} }).catch(async () => {
    // No template in this bare data dir: a StandaloneVM needs none.
    await d.client.createDomain({ name: "work", class: domainClassFromWord("StandaloneVM"), template: "", label: "blue", properties: {} });
  });
  shell = await startShellServer({ admin: d.client, webDir });
});

afterAll(async () => {
  await shell?.close();
  await d?.stop();
  removeTestDaemonDirs(dirs);
  rmSync(webDir, { recursive: true, force: true });
});

const base = () => `http://127.0.0.1:${shell.port}`;
const host = () => `127.0.0.1:${shell.port}`;

interface ConnectOpts {
  /** Offered as the `qvm-token.<token>` subprotocol. */
  token?: string;
  origin?: string;
  path?: string;
  /** The subprotocols offered (default: qvm-shell.v1 and the token's, when there is one). */
  protocols?: string[];
  headers?: Record<string, string>;
  query?: string;
}

function connect(opts: ConnectOpts = {}): Promise<{ ws?: WebSocket; status?: number; first?: unknown }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.origin !== undefined) headers.Origin = opts.origin;
    const protocols = opts.protocols ?? [SHELL_PROTOCOL, ...(opts.token === undefined ? [] : [`${TOKEN_PROTOCOL_PREFIX}${opts.token}`])];
    const ws = new WebSocket(`ws://127.0.0.1:${shell.port}${opts.path ?? "/ws"}${opts.query ?? ""}`, protocols, { headers });
    ws.once("unexpected-response", (_req, res) => resolve({ status: res.statusCode }));
    ws.once("error", () => resolve({ status: -1 }));
    ws.once("message", (data) => resolve({ ws, first: JSON.parse(String(data)) }));
  });
}

/** A plain HTTP GET with any Host header (fetch will not send a forged one). */
function get(urlPath: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: shell.port, path: urlPath, headers: { Host: host(), ...headers } }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
  });
}

function next(ws: WebSocket, type: string): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const on = (data: WebSocket.RawData, binary: boolean) => {
      if (binary) return;
      const m = JSON.parse(String(data)) as Record<string, unknown>;
      if (m.t === type) {
        ws.off("message", on);
        resolve(m);
      }
    };
    ws.on("message", on);
  });
}

describe("web shell server", () => {
  it("serves the page's static files to anyone on this server, with no cookie and no CORS", async () => {
    for (const url of ["/", "/app.js", "/app.css", "/?token=wrong", `/?token=${shell.token}`]) {
      const r = await fetch(base() + url);
      expect(r.status, url).toBe(200);
      expect(r.headers.get("set-cookie"), url).toBeNull();
      expect(r.headers.get("access-control-allow-origin")).toBeNull();
      expect(r.headers.get("content-security-policy")).toContain("default-src 'self'");
      expect(r.headers.get("referrer-policy")).toBe("no-referrer");
    }
    // Nothing else exists, and nothing can be posted.
    expect((await fetch(`${base()}/../package.json`)).status).toBe(404);
    expect((await fetch(`${base()}/etc/passwd`)).status).toBe(404);
    expect((await fetch(`${base()}/`, { method: "POST", body: "x" })).status).toBe(405);
  });

  it.each([
    ["a DNS-rebound name", "attacker.example:PORT", 421],
    ["the right name on another port", "127.0.0.1:1", 421],
    ["another loopback address", "[::1]:PORT", 421],
    ["no port", "127.0.0.1", 421],
    ["localhost with this port", "localhost:PORT", 200],
    ["this address and port", "127.0.0.1:PORT", 200],
    ["the same in capitals", "LOCALHOST:PORT", 200],
  ])("Host %s (%s) → %i", async (_what, hostHeader, want) => {
    const r = await get("/", { Host: hostHeader.replace("PORT", String(shell.port)) });
    expect(r.status).toBe(want);
    if (want !== 200) expect(r.body).toMatch(/misdirected/);
  });

  it("prints a loopback URL carrying the token in its fragment, and refuses to listen beyond loopback", async () => {
    expect(shell.url).toBe(`http://127.0.0.1:${shell.port}/#token=${shell.token}`);
    expect(shell.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    await expect(startShellServer({ admin: d.client, webDir, host: "0.0.0.0" })).rejects.toThrow(/loopback only/);
  });

  it.each<[string, ConnectOpts | (() => ConnectOpts), number]>([
    ["no token", () => ({ origin: base() }), 403],
    ["a wrong token", () => ({ origin: base(), token: "nope" }), 403],
    ["the token with one more character", () => ({ origin: base(), token: `${shell.token}x` }), 403],
    ["the token only in the query (the old way)", () => ({ origin: base(), query: `?token=${shell.token}` }), 403],
    ["the token only as the old cookie", () => ({ origin: base(), headers: { Cookie: `qvm_shell=${shell.token}` } }), 403],
    ["the token without the qvm-shell.v1 protocol", () => ({ origin: base(), protocols: [`${TOKEN_PROTOCOL_PREFIX}${shell.token}`] }), 403],
    ["no Origin", () => ({ token: shell.token }), 403],
    ["a foreign Origin", () => ({ token: shell.token, origin: "http://evil.example" }), 403],
    ["an Origin on another port", () => ({ token: shell.token, origin: "http://127.0.0.1:1" }), 403],
    ["another path", () => ({ token: shell.token, origin: base(), path: "/other" }), 403],
    ["a rebound Host", () => ({ token: shell.token, origin: base(), headers: { Host: `attacker.example:${shell.port}` } }), 421],
    ["a Host on another port", () => ({ token: shell.token, origin: base(), headers: { Host: "127.0.0.1:1" } }), 421],
  ])("refuses a WebSocket with %s (%i)", async (_what, opts, want) => {
    expect((await connect(typeof opts === "function" ? opts() : opts)).status).toBe(want);
  });

  it("accepts a WebSocket offering the token as a subprotocol from this page's Origin, and never echoes the token", async () => {
    const good = await connect({ token: shell.token, origin: base() });
    expect(good.ws?.protocol).toBe(SHELL_PROTOCOL);
    expect(good.first).toMatchObject({ t: "domains", domains: [{ name: "work", label: "blue", state: "Halted" }] });
    // Qubes' words for the class, as the page shows it.
    expect(["AppVM", "StandaloneVM"]).toContain((good.first as { domains: { class: string }[] }).domains[0]!.class);
    good.ws!.close();
    const viaLocalhost = await connect({ token: shell.token, origin: `http://localhost:${shell.port}`, headers: { Host: `localhost:${shell.port}` } });
    expect(viaLocalhost.first).toMatchObject({ t: "domains" });
    viaLocalhost.ws!.close();
  });

  it("answers garbage, unknown or oversized messages with an error and stays usable", async () => {
    const { ws } = await connect({ token: shell.token, origin: base() });
    ws!.send("not json");
    expect(await next(ws!, "error")).toMatchObject({ code: "INVALID_ARGUMENT", message: /not JSON/ });
    ws!.send(JSON.stringify({ t: "open", id: 1, domain: "<script>", kind: "shell", rows: 24, cols: 80 }));
    expect(await next(ws!, "error")).toMatchObject({ message: /invalid message/ });
    ws!.send(JSON.stringify({ t: "rm -rf", domain: "work" }));
    expect(await next(ws!, "error")).toMatchObject({ message: /invalid message/ });
    ws!.send(Buffer.from([1]));
    expect(await next(ws!, "error")).toMatchObject({ message: /4-byte terminal id/ });
    ws!.send(JSON.stringify({ t: "list" }));
    expect(await next(ws!, "domains")).toMatchObject({ domains: [{ name: "work" }] });
    const closed = new Promise<number>((r) => ws!.once("close", (code) => r(code)));
    ws!.send(Buffer.alloc(2 * 1024 * 1024));
    expect(await closed).toBe(1009); // message too big: the connection is closed, the server lives on
    expect((await fetch(`${base()}/`)).status).toBe(200);
  });

  it("passes lifecycle errors back, and shows changes from the event feed live", async () => {
    const { ws } = await connect({ token: shell.token, origin: base() });
    ws!.send(JSON.stringify({ t: "unpause", domain: "work" }));
    expect(await next(ws!, "error")).toMatchObject({ code: "FAILED_PRECONDITION", message: /not running/ });
    ws!.send(JSON.stringify({ t: "open", id: 7, domain: "work", kind: "shell", rows: 24, cols: 80 }));
    const closed = await next(ws!, "closed");
    expect(closed).toMatchObject({ id: 7, reason: /not running/ });
    const listed = next(ws!, "domains");
    await d.client.createDomain({ name: "other", class: domainClassFromWord("StandaloneVM"), template: "", label: "red", properties: {} });
    expect((await listed).domains).toEqual(expect.arrayContaining([expect.objectContaining({ name: "other", label: "red" })]));
    ws!.close();
  });
});

