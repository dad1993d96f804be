// The generated admin client against a grpc-js server with the real service definition on a
// temporary socket: every RPC is there, requests and replies pass whole, qvmd's QvmError comes
// back with its code, and a missing or silent qvmd becomes DAEMON_UNAVAILABLE.
import { Server, ServerCredentials, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_UNARY_CALLS, AdminClient } from "./admin-client.js";
import { QvmError } from "./contracts/index.js";
import { QvmAdminService, type QvmAdminServer } from "./gen/qvm/admin/v1/admin.js";
import { toGrpcError } from "./grpc-status.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-admin-client-"));
const socketPath = path.join(dir, "qvmd.sock");
const server = new Server();
let client: AdminClient;

beforeAll(async () => {
  const impl: Partial<QvmAdminServer> = {
    getDomain: (call, cb) =>
      call.request.name === "work"
        ? cb(null, { domain: { name: "work", class: 1, state: 3, label: "blue", template: "", netvm: "", tags: ["a"], createdAt: "", lastStopReason: "", vmmPid: 7, accel: "", isPreload: false } })
        : cb(toGrpcError(new QvmError("NOT_FOUND", `domain "${call.request.name}" does not exist`))),
    shutdownDomain: (call, cb) => cb(null, { reason: `${call.request.name} wait=${call.request.wait} force=${call.request.force}` }),
    watchEvents: (call) => {
      call.write({ seq: 1, type: 4, domain: call.request.domain, fields: {}, time: "t" });
      call.end();
    },
    console: (call) => call.on("data", (req) => req.msg?.$case === "input" && call.write({ output: req.msg.value })),
  };
  server.addService(QvmAdminService, impl as UntypedServiceImplementation);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  client = new AdminClient(socketPath);
});

afterAll(() => {
  client?.close();
  server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe("AdminClient", () => {
  it("has a method for every RPC of the service definition", () => {
    for (const name of Object.keys(QvmAdminService)) expect(typeof client[name as keyof AdminClient], name).toBe("function");
    expect(ADMIN_UNARY_CALLS.has("getDomain")).toBe(true);
    for (const stream of ["exec", "console", "watchEvents", "askPrompt"]) expect(ADMIN_UNARY_CALLS.has(stream), stream).toBe(false);
  });

  it("sends the request message and resolves with the reply", async () => {
    const { domain } = await client.getDomain({ name: "work" });
    expect(domain).toMatchObject({ name: "work", class: 1, state: 3, tags: ["a"], vmmPid: 7 });
    expect(await client.shutdownDomain({ name: "work", wait: true, force: false })).toEqual({ reason: "work wait=true force=false" });
  });

  it("rejects with qvmd's QvmError, code and message intact", async () => {
    await expect(client.getDomain({ name: "nope" })).rejects.toMatchObject({ name: "QvmError", code: "NOT_FOUND", message: 'domain "nope" does not exist' });
  });

  it("maps an RPC this server lacks to FAILED_PRECONDITION naming the version skew", async () => {
    await expect(client.listDomains({})).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("older than this client") });
  });

  it("streams: server-streaming with a request, duplex without", async () => {
    const events = client.watchEvents({ domain: "work" });
    const got = await new Promise((resolve) => events.once("data", resolve));
    expect(got).toMatchObject({ seq: 1, type: 4, domain: "work" });
    const con = client.console();
    con.write({ msg: { $case: "input", value: Buffer.from("hi") } });
    const echo = await new Promise<{ output: Buffer }>((resolve) => con.once("data", resolve));
    expect(echo.output.toString()).toBe("hi");
    con.cancel();
    const err = await new Promise((resolve) => con.once("error", resolve));
    expect(client.errorOf(err)).toMatchObject({ code: "INTERNAL", message: "the call was cancelled" });
  });

  it("reports a socket nobody serves as DAEMON_UNAVAILABLE", async () => {
    const missing = new AdminClient(path.join(dir, "none.sock"));
    try {
      await expect(missing.getDomain({ name: "work" })).rejects.toMatchObject({ code: "DAEMON_UNAVAILABLE", message: expect.stringContaining("qvmd is not reachable at") });
    } finally {
      missing.close();
    }
  });

  it("reports a qvmd that does not answer within the deadline as DAEMON_UNAVAILABLE, naming the time", async () => {
    // Accepts the connection and says nothing: a hung qvmd.
    const hungPath = path.join(dir, "hung.sock");
    const sockets: net.Socket[] = [];
    const hung = net.createServer((s) => sockets.push(s)).listen(hungPath);
    const silent = new AdminClient(hungPath);
    try {
      await expect(silent.getDaemonInfo({}, { timeoutMs: 300 })).rejects.toMatchObject({ code: "DAEMON_UNAVAILABLE", message: expect.stringMatching(/did not answer within 0.3 s/) });
    } finally {
      silent.close();
      for (const s of sockets) s.destroy();
      hung.close();
    }
  });
});
