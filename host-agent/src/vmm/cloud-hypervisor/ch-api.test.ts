// The cloud-hypervisor API client against a local server on a Unix socket that answers as CH's
// OpenAPI description documents: the paths and bodies it sends, the documented errors, a VMM that
// dies mid-call or never answers, and hostile answers (oversize, not JSON, unknown state).
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ChApi } from "./ch-api.js";
import { chSchema } from "./test-support.js";

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;
let dir = "";
let server: http.Server;
let handler: Handler = (_req, _body, res) => res.writeHead(204).end();
const seen: Array<{ method: string; url: string; body: string }> = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "ch-api-"));
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ method: req.method!, url: req.url!, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(path.join(dir, "api.sock"), r));
});
afterEach(() => {
  seen.length = 0;
  handler = (_req, _body, res) => res.writeHead(204).end();
});
afterAll(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

const api = (timeoutMs?: number) => new ChApi(path.join(dir, "api.sock"), timeoutMs);

describe("ChApi", () => {
  it("sends each action to its documented path with its documented body", async () => {
    const a = api();
    await a.boot();
    await a.pause();
    await a.resume();
    await a.powerButton();
    await a.shutdown();
    await a.resizeDisk("disk1", 2 * 1024 ** 3);
    await a.addNet({ id: "net0", tap: "qvm-tap0", mac: "00:16:3e:00:00:01" });
    await a.removeDevice("net0");
    await a.snapshot("/run/qvm/snap");
    await a.restore("/run/qvm/snap", { resume: false });
    await a.shutdownVmm();
    expect(seen.map((s) => `${s.method} ${s.url} ${s.body}`)).toEqual([
      "PUT /api/v1/vm.boot ",
      "PUT /api/v1/vm.pause ",
      "PUT /api/v1/vm.resume ",
      "PUT /api/v1/vm.power-button ",
      "PUT /api/v1/vm.shutdown ",
      'PUT /api/v1/vm.resize-disk {"id":"disk1","desired_size":2147483648}',
      'PUT /api/v1/vm.add-net {"id":"net0","tap":"qvm-tap0","mac":"00:16:3e:00:00:01"}',
      'PUT /api/v1/vm.remove-device {"id":"net0"}',
      'PUT /api/v1/vm.snapshot {"destination_url":"file:///run/qvm/snap"}',
      'PUT /api/v1/vm.restore {"source_url":"file:///run/qvm/snap","resume":false}',
      "PUT /api/v1/vmm.shutdown ",
    ]);
    // Each body is what CH's API description asks for.
    const bodies: Record<string, string> = { "vm.add-net": "NetConfig", "vm.resize-disk": "VmResizeDisk", "vm.remove-device": "VmRemoveDevice", "vm.snapshot": "VmSnapshotConfig", "vm.restore": "RestoreConfig" };
    for (const s of seen.filter((x) => x.body)) {
      const validate = chSchema(bodies[s.url.replace("/api/v1/", "")]!);
      expect(validate(JSON.parse(s.body)), `${s.url}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
  });

  it("reads ping and info, and refuses an unknown state or a reply that is not JSON", async () => {
    handler = (req, _b, res) => res.writeHead(200, { "Content-Type": "application/json" }).end(req.url!.endsWith("ping") ? '{"version":"v53.0"}' : '{"state":"Running","config":{},"memory_actual_size":419430400}');
    expect(await api().ping()).toEqual({ version: "v53.0" });
    expect(await api().info()).toEqual({ state: "Running", memoryActualSize: 419430400 });
    handler = (_r, _b, res) => res.writeHead(200).end('{"state":"Hacked\\u001b[2J","config":{}}');
    await expect(api().info()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.not.stringMatching(/\u001b/) });
    handler = (_r, _b, res) => res.writeHead(200).end("<html>");
    await expect(api().info()).rejects.toThrow(/not JSON/);
  });

  it("maps the documented errors: 405 is the wrong state, others a failed VMM, text clipped and cleaned", async () => {
    handler = (_r, _b, res) => res.writeHead(405).end("VM is not booted");
    await expect(api().pause()).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("VM is not booted") });
    handler = (_r, _b, res) => res.writeHead(500).end('["Error from API","The VM could not be paused","VM is not running"]');
    await expect(api().pause()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringContaining("The VM could not be paused: VM is not running") });
    handler = (_r, _b, res) => res.writeHead(404).end('["Error from API","No such device"]');
    await expect(api().removeDevice("net9")).rejects.toMatchObject({ code: "NOT_FOUND" });
    handler = (_r, _b, res) => res.writeHead(500).end(`bad\x1b[31m${"x".repeat(5000)}`);
    const err = (await api().resizeDisk("disk9", 1).catch((e: Error) => e)) as Error & { code: string };
    expect(err.code).toBe("VMM_FAILED");
    expect(err.message).not.toMatch(/\x1b/);
    expect(err.message.length).toBeLessThan(500);
  });

  it("fails at once when the VMM dies mid-call, and at the deadline when it never answers", async () => {
    handler = (req) => req.socket.destroy();
    await expect(api().boot()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringMatching(/still running/) });
    handler = () => {};
    await expect(api(200).boot()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringMatching(/within 200 ms/) });
    await expect(new ChApi(path.join(dir, "none.sock")).ping()).rejects.toMatchObject({ code: "VMM_FAILED" });
  });

  it("stops reading an answer past 1 MiB", async () => {
    handler = (_r, _b, res) => res.writeHead(200).end(Buffer.alloc(2 * 1024 * 1024, 0x20));
    await expect(api().info()).rejects.toThrow(/more than/);
  });
});
