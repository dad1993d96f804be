// Integration: the real guest agent service on the host (no VM), driven by the host's AgentClient.
// Covers the process plumbing quickly; tests/e2e covers the same inside a real domain.
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ExecSignal } from "@qvm/protocol/contracts";
import type { AgentClient } from "@qvm/host-agent";
import { serveLocalAgent, type LocalAgent } from "@qvm/host-agent/testing";
import { createGuestAgentService } from "./service.js";
import { buildCommand, ExecRequestError, PTY_HELPER } from "./exec-session.js";

let local: LocalAgent;
let client: AgentClient;
let powerCalls: boolean[] = [];

beforeAll(async () => {
  local = await serveLocalAgent(createGuestAgentService({ shutdown: (reboot) => powerCalls.push(reboot) }));
  client = local.client;
});
afterAll(() => local.close());

const text = async (s: NodeJS.ReadableStream) => {
  let t = "";
  for await (const c of s) t += c.toString();
  return t;
};

describe("guest agent service", () => {
  it("answers Ping and GetInfo with this kernel's release", async () => {
    expect((await client.ping()).agentVersion).toMatch(/\d/);
    expect((await client.getInfo()).kernelRelease).toBe(os.release());
  });

  it("runs a shell command with stdin, stdout, stderr and exit code", async () => {
    const p = client.exec({ command: "cat; echo e >&2; exit 5" });
    p.stdin.end("in\n");
    const [out, err, exit] = await Promise.all([text(p.stdout), text(p.stderr), p.exit]);
    expect({ out, err, exit }).toEqual({ out: "in\n", err: "e\n", exit: { code: 5, signal: null } });
  });

  it("refuses a request with both argv and a shell command, or neither", () => {
    const base = { env: {}, cwd: "", user: "", pty: false, window: undefined, dataPort: 0, dataCookie: Buffer.alloc(0) };
    expect(() => buildCommand({ ...base, argv: ["true"], shellCommand: "true" })).toThrow(ExecRequestError);
    expect(() => buildCommand({ ...base, argv: [], shellCommand: "" })).toThrow(ExecRequestError);
    expect(() => buildCommand({ ...base, argv: ["true"], shellCommand: "", user: "nobody-at-all" })).toThrow(/no such user/);
  });

  it("drops to a non-root user through setpriv and wraps pty sessions in the helper", () => {
    const base = { env: {}, cwd: "", shellCommand: "", argv: ["id"], dataPort: 0, dataCookie: Buffer.alloc(0) };
    const lookup = () => ({ name: "user", uid: 1000, gid: 1000, home: "/home/user", shell: "/bin/bash" });
    const cmd = buildCommand({ ...base, user: "user", pty: true, window: { rows: 40, cols: 120 } }, lookup);
    expect([cmd.file, ...cmd.args]).toEqual([PTY_HELPER, "40", "120", "setpriv", "--reuid=1000", "--regid=1000", "--init-groups", "--", "id"]);
    expect(cmd.env).toMatchObject({ HOME: "/home/user", USER: "user", TERM: "xterm-256color" });
    expect(cmd.cwd).toBe("/home/user");
  });

  it("refuses signals outside the allowed set", async () => {
    const p = client.exec({ command: ["sleep", "30"] });
    const { execId } = await p.started;
    // The host's client is typed to the contract's list; a host that sends another anyway is refused.
    await expect(client.signal(execId, "SIGSEGV" as ExecSignal)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await client.signal(execId, "SIGTERM");
    expect(await p.exit).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("kills the process when the host cancels the stream", async () => {
    const p = client.exec({ command: "echo $$; exec sleep 30" });
    const pid = Number((await new Promise<Buffer>((r) => p.stdout.once("data", r))).toString());
    p.cancel();
    await expect(p.exit).rejects.toBeTruthy();
    await new Promise((r) => setTimeout(r, 300));
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it("Shutdown replies first, then powers off", async () => {
    powerCalls = [];
    await client.shutdown();
    await new Promise((r) => setTimeout(r, 100));
    expect(powerCalls).toEqual([false]);
  });
});
