// The web shell server against a real qvmd (no VM: access control, the domain list, lifecycle
// errors, hostile messages). Terminals into real domains are tested in a browser in tests/e2e.
import { domainClassFromWord } from "@qvm/protocol";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { startShellServer, type ShellServer } from "./server.js";

let d: TestDaemon;
let shell: ShellServer;
let webDir = "";
const dirs = testDaemonDirs("shell");

beforeAll(async () => {
  d = await startTestDaemon(dirs);
  webDir = mkdtempSync(path.join(os.tmpdir(), "qvm-web-"));
  for (const f of ["index.html", "app.js", "app.css"]) writeFileSync(path.join(webDir, f), `/* ${f} */`);
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

function connect(opts: { token?: string; origin?: string; path?: string } = {}): Promise<{ ws?: WebSocket; status?: number; first?: unknown }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = {};
    if (opts.origin !== undefined) headers.Origin = opts.origin;
    const q = opts.token === undefined ? "" : `?token=${opts.token}`;
    const ws = new WebSocket(`ws://127.0.0.1:${shell.port}${opts.path ?? "/ws"}${q}`, { headers });
    ws.once("unexpected-response", (_req, res) => resolve({ status: res.statusCode }));
    ws.once("error", () => resolve({ status: -1 }));
    ws.once("message", (data) => resolve({ ws, first: JSON.parse(String(data)) }));
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
  it("refuses every request without the token, and serves the page with it", async () => {
    for (const url of ["/", "/app.js", "/?token=wrong", `/?token=${shell.token}x`]) {
      const r = await fetch(base() + url);
      expect(r.status, url).toBe(403);
      expect(r.headers.get("access-control-allow-origin")).toBeNull();
    }
    const ok = await fetch(`${base()}/?token=${shell.token}`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("set-cookie")).toMatch(/^qvm_shell=.+; HttpOnly; SameSite=Strict/);
    expect(ok.headers.get("content-security-policy")).toContain("default-src 'self'");
    expect(ok.headers.get("access-control-allow-origin")).toBeNull();
    // The cookie stands for the token on the page's own requests; other paths do not exist.
    const cookie = { headers: { Cookie: `qvm_shell=${shell.token}` } };
    expect((await fetch(`${base()}/app.js`, cookie)).status).toBe(200);
    expect((await fetch(`${base()}/../package.json`, cookie)).status).toBe(404);
    expect((await fetch(`${base()}/etc/passwd`, cookie)).status).toBe(404);
  });

  it("prints a loopback URL carrying the token and refuses to listen beyond loopback", async () => {
    expect(shell.url).toBe(`http://127.0.0.1:${shell.port}/?token=${shell.token}`);
    await expect(startShellServer({ admin: d.client, webDir, host: "0.0.0.0" })).rejects.toThrow(/loopback only/);
  });

  it("accepts a WebSocket only with the token and this page's Origin", async () => {
    const origin = base();
    expect((await connect({ origin })).status).toBe(403);
    expect((await connect({ origin, token: "nope" })).status).toBe(403);
    expect((await connect({ token: shell.token })).status).toBe(403);
    expect((await connect({ token: shell.token, origin: "http://evil.example" })).status).toBe(403);
    expect((await connect({ token: shell.token, origin, path: "/other" })).status).toBe(403);
    const good = await connect({ token: shell.token, origin });
    expect(good.first).toMatchObject({ t: "domains", domains: [{ name: "work", label: "blue", state: "Halted" }] });
    // Qubes' words for the class, as the page shows it.
    expect(["AppVM", "StandaloneVM"]).toContain((good.first as { domains: { class: string }[] }).domains[0]!.class);
    good.ws!.close();
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
    expect((await fetch(`${base()}/?token=${shell.token}`)).status).toBe(200);
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

