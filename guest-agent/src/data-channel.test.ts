// Integration: Exec over a data channel (qvm-exec-data, built here from its C source) between the
// real guest agent service and the host's AgentClient, over Unix sockets instead of vsock. The
// hostile cases: a data channel that sends garbage or names no Exec.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "@qvm/images";
import { ExecDataListener, serveLocalAgent, type LocalAgent } from "@qvm/host-agent/testing";

let dir = "";
let local: LocalAgent;
let listener: ExecDataListener;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-data-"));
  const helper = path.join(dir, "qvm-exec-data");
  execFileSync("gcc", ["-O2", "-Wall", "-o", helper, path.join(repoRoot(), "guest-agent/native/qvm-exec-data.c")]);
  const socket = path.join(dir, "data.sock");
  // Read by exec-session.ts when it loads: imported below, after these are set.
  process.env.QVM_EXEC_DATA_HELPER = helper;
  process.env.QVM_EXEC_DATA_ADDRESS = `unix:${socket}`;
  const { createGuestAgentService } = await import("./service.js");
  local = await serveLocalAgent(createGuestAgentService({ shutdown: () => {} }));
  listener = await ExecDataListener.listen(socket);
  local.client.useDataChannels(listener);
}, 60_000);
afterAll(() => {
  listener?.close();
  local?.close();
  rmSync(dir, { recursive: true, force: true });
});

const bytes = async (s: NodeJS.ReadableStream) => {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
};

describe("exec data channel", () => {
  it("carries stdin, stdout, stderr and the exit code, and the program never sees the cookie", async () => {
    const p = local.client.exec({ command: 'cat; echo e >&2; echo "[${QVM_EXEC_DATA:-unset}]"; exit 5' });
    p.stdin.end("in\n");
    const [out, err, exit] = await Promise.all([bytes(p.stdout), bytes(p.stderr), p.exit]);
    expect({ out: out.toString(), err: err.toString(), exit }).toEqual({ out: "in\n[unset]\n", err: "e\n", exit: { code: 5, signal: null } });
  });

  it("moves 32 MiB each way byte for byte, with back-pressure", async () => {
    const size = 32 * 1024 * 1024;
    const out = local.client.exec({ command: ["head", "-c", String(size), "/dev/urandom"] });
    out.stdin.end();
    const got = await bytes(out.stdout);
    expect((await out.exit).code).toBe(0);
    expect(got.length).toBe(size);
    const data = Buffer.alloc(size, 7);
    const sum = local.client.exec({ command: "sha256sum" });
    sum.stdin.end(data);
    const digest = (await bytes(sum.stdout)).toString().split(" ")[0];
    expect(digest).toBe((await import("node:crypto")).createHash("sha256").update(data).digest("hex"));
  });

  it("keeps output flowing from a program that never reads its stdin", async () => {
    const p = local.client.exec({ command: "head -c 1000000 /dev/zero; sleep 0.2" });
    p.stdin.write(Buffer.alloc(4 * 1024 * 1024));
    const got = await bytes(p.stdout);
    p.stdin.end();
    expect(got.length).toBe(1_000_000);
    expect((await p.exit).code).toBe(0);
  });

  it("reports a signal and signals the program itself", async () => {
    const p = local.client.exec({ command: ["sleep", "30"] });
    p.stdin.end();
    const { execId } = await p.started;
    await new Promise((r) => setTimeout(r, 300));
    await local.client.signal(execId, "SIGTERM");
    expect(await p.exit).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("reports a missing program as 127", async () => {
    const p = local.client.exec({ command: ["/no/such/program"] });
    p.stdin.end();
    const err = (await bytes(p.stderr)).toString();
    expect((await p.exit).code).toBe(127);
    expect(err).toMatch(/cannot run/);
  });

  it("drops connections that name no Exec or send garbage, and keeps serving", async () => {
    for (const payload of [Buffer.alloc(16, 1), Buffer.from("GET / HTTP/1.1\r\n\r\n"), Buffer.alloc(1 << 20, 0xff)]) {
      const s = net.connect(listener.socketPath);
      s.on("error", () => {});
      s.end(payload);
      await new Promise((r) => s.on("close", r));
    }
    const p = local.client.exec({ command: ["echo", "still"] });
    p.stdin.end();
    expect((await bytes(p.stdout)).toString()).toBe("still\n");
  });
});
