// The guest agent's Exec path, end to end, on one booted domain.
import { createHash, randomBytes } from "node:crypto";
import { readdirSync, readlinkSync, statSync } from "node:fs";
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DomainVm } from "@qvm/host-agent";
import { e2eVmm } from "./e2e-vmm.js";
import { bootDomain, killLeftoverDomains, collect, imageStore, leftovers, testDirs, type TestDirs } from "./fixtures.js";

let dirs: TestDirs;
let dom: DomainVm;

beforeAll(async () => {
  dirs = testDirs("exec");
  dom = await bootDomain("exec", dirs);
});

afterAll(async () => {
  if (dom) await dom.shutdown();
  await killLeftoverDomains();
  const left = leftovers(dirs);
  dirs.cleanup();
  expect(left).toEqual({ processes: [], runtimeDirExists: false });
});

async function run(command: string[] | string, input?: Buffer | string) {
  const p = dom.agent.exec({ command });
  if (input !== undefined) p.stdin.write(input);
  p.stdin.end();
  const [stdout, stderr, exit] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exit]);
  return { stdout: stdout.toString(), stderr: stderr.toString(), exit };
}

describe("exec through the guest agent", () => {
  it("runs uname -r in the guest kernel, not the host's", async () => {
    const release = imageStore().kernel().manifest.kernelRelease;
    const r = await run(["uname", "-r"]);
    expect(r.stdout.trim()).toBe(release);
    expect(release).not.toBe(os.release());
    const info = await dom.agent.getInfo();
    expect(info.kernelRelease).toBe(release);
    expect(info.uptimeSeconds).toBeGreaterThan(0);
  });

  it("pipes 10 MiB through cat unchanged", async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const p = dom.agent.exec({ command: ["cat"] });
    const out = collect(p.stdout);
    p.stdin.end(data);
    const [got, exit] = await Promise.all([out, p.exit]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(got.length).toBe(data.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
  });

  // Stdin and output both busy on one data channel: without the stdin window this hung about once
  // in ten (vhost-device-vsock stopped forwarding output; docs/agent-protocol.md, "Stdin window").
  it("pipes 10 MiB through cat ten times in a row without a stall", async () => {
    for (let i = 0; i < 10; i++) {
      const data = randomBytes(10 * 1024 * 1024);
      const p = dom.agent.exec({ command: ["cat"] });
      const out = collect(p.stdout);
      p.stdin.end(data);
      const [got, exit] = await Promise.all([out, p.exit]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(got.equals(data), `run ${i}`).toBe(true);
    }
  }, 120_000);

  it("keeps stderr separate from stdout", async () => {
    const r = await run("echo to-out; echo to-err >&2; echo more-out");
    expect(r.stdout).toBe("to-out\nmore-out\n");
    expect(r.stderr).toBe("to-err\n");
  });

  it("propagates exit codes", async () => {
    expect((await run("exit 42")).exit).toEqual({ code: 42, signal: null });
    expect((await run(["true"])).exit).toEqual({ code: 0, signal: null });
    expect((await run(["false"])).exit).toEqual({ code: 1, signal: null });
  });

  it("reports a program that does not exist as 127", async () => {
    const r = await run(["/no/such/program"]);
    expect(r.exit.code).toBe(127);
    expect(r.stderr).toContain("/no/such/program");
  });

  it("propagates death by signal", async () => {
    expect((await run("kill -TERM $$")).exit).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("delivers Signal to a running process", async () => {
    const p = dom.agent.exec({ command: ["sleep", "600"] });
    const { execId } = await p.started;
    await dom.agent.signal(execId, "SIGKILL");
    expect(await p.exit).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("runs as the requested user with its environment", async () => {
    const r = await run("id -un; echo $HOME; echo $FOO");
    expect(r.stdout).toBe("root\n/root\n\n");
    const p = dom.agent.exec({ command: "id -un; id -Gn; echo $HOME; pwd; echo $FOO", user: "user", env: { FOO: "bar" } });
    p.stdin.end();
    const out = (await collect(p.stdout)).toString().split("\n");
    expect(out[0]).toBe("user");
    expect(out[1]).toContain("sudo");
    expect(out.slice(2, 5)).toEqual(["/home/user", "/home/user", "bar"]);
  });

  it("refuses an unknown user with a clear error", async () => {
    const p = dom.agent.exec({ command: ["true"], user: "nobody-here" });
    await expect(p.exit).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("nobody-here") });
  });

  it("gives a pty session that echoes typed input and follows resizes", async () => {
    const p = dom.agent.exec({ command: ["/bin/sh"], pty: { rows: 30, cols: 100 } });
    let screen = "";
    p.stdout.on("data", (d: Buffer) => (screen += d.toString()));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 600 && !re.test(screen); i++) await new Promise((r) => setTimeout(r, 50));
      expect(screen).toMatch(re);
    };
    p.stdin.write("echo $((6*7)); tty\n");
    await waitFor(/echo \$\(\(6\*7\)\); tty\r?\n/); // the terminal echoed what was typed
    await waitFor(/42\r?\n\/dev\/pts\/\d+/);
    p.stdin.write("stty size\n");
    await waitFor(/30 100\r?\n/);
    p.resize(50, 132);
    p.stdin.write("stty size\n");
    await waitFor(/50 132\r?\n/);
    p.stdin.write("exit 7\n");
    expect(await p.exit).toEqual({ code: 7, signal: null });
  });

  it("keeps several processes apart at once", async () => {
    const rs = await Promise.all([1, 2, 3, 4].map((n) => run(`sleep 0.${n}; echo $((${n}*${n}))`)));
    expect(rs.map((r) => r.stdout.trim())).toEqual(["1", "4", "9", "16"]);
  });
});

describe("a hostile guest on the vsock path", () => {
  it("garbage instead of gRPC fails the call with a typed error and the host keeps working", async () => {
    const { VsockRelay, AgentClient } = await import("@qvm/host-agent");
    const path = await import("node:path");
    // A listener in the guest that answers every connection with random bytes.
    const liar = dom.agent.exec({ command: ["socat", "VSOCK-LISTEN:1025,reuseaddr,fork", "SYSTEM:head -c 4000 /dev/urandom"] });
    await liar.started;
    await new Promise((r) => setTimeout(r, 1500));
    const relay = await VsockRelay.listen(path.join(dirs.base, "liar.sock"), (await dom.vm.info()).vsockPath, 1025);
    const client = new AgentClient(relay.listenPath, 5000);
    try {
      const err = await client.ping(5000).then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ name: "QvmError" });
      expect(["AGENT_PROTOCOL", "AGENT_UNAVAILABLE", "AGENT_TIMEOUT"]).toContain((err as { code: string }).code);
    } finally {
      client.close();
      await relay.close();
      await dom.agent.signal((await liar.started).execId, "SIGKILL");
      await liar.exit;
    }
    // The real agent still answers.
    expect((await dom.agent.ping()).agentVersion).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("data-channel connections that name no Exec, or flood the port, are dropped and Exec keeps working", async () => {
    // Every non-pty Exec's stdio comes over the data channel: the program's parent is the helper.
    expect((await run(["sh", "-c", 'tr "\\0" " " < /proc/$PPID/cmdline'])).stdout).toMatch(/^\/usr\/lib\/qvm\/qvm-exec-data sh -c/);
    // From inside the domain: a wrong cookie, garbage, and 64 connections that never say anything.
    const flood = await run(
      "for i in $(seq 64); do (sleep 8 | socat -u - VSOCK-CONNECT:2:51) >/dev/null 2>&1 & done; " +
        "head -c 16 /dev/urandom | socat -t 2 - VSOCK-CONNECT:2:51; head -c 100000 /dev/urandom | socat -t 2 - VSOCK-CONNECT:2:51; echo done",
    );
    expect(flood.stdout).toContain("done");
    // While the domain holds 32 unnamed connections its own Execs may fail (the flood costs only
    // its sender); each is dropped 5 s after it connected, and Exec works again.
    let r = await run(["echo", "still"]);
    for (let i = 0; i < 30 && r.stdout !== "still\n"; i++) {
      await new Promise((res) => setTimeout(res, 1000));
      r = await run(["echo", "still"]);
    }
    expect(r).toMatchObject({ stdout: "still\n", exit: { code: 0 } });
    await run("pkill -f 'VSOCK-CONNECT:2:51' || true");
  });
});

describe("the template's boot (docs/performance.md)", () => {
  it("loads none of the modules a domain never uses, and starts the agent from its code cache", async () => {
    const r = await run("cat /proc/modules | cut -d' ' -f1; echo ---; journalctl -b -u qvm-agent --no-pager -o cat; ls /usr/lib/qvm");
    const [modules, rest] = r.stdout.split("---\n");
    expect(modules!.split("\n")).not.toContain("kvm");
    expect(modules!.split("\n")).not.toContain("aesni_intel");
    expect(modules!.split("\n")).toContain("nf_tables");
    expect(rest).toContain("qvm-agent.cjs.v8cache");
    expect(rest).not.toContain("does not fit this Node");
    expect(rest).toMatch(/listening on vsock port 1024/);
  });
});

/** Guest RAM the host holds for a QEMU: the blocks its memfd memory backend has allocated. */
function guestRamMiB(qemuPid: number): number {
  const fd = readdirSync(`/proc/${qemuPid}/fd`).find((n) => readlinkSync(`/proc/${qemuPid}/fd/${n}`).startsWith("/memfd:memory-backend"));
  return (statSync(`/proc/${qemuPid}/fd/${fd}`).blocks * 512) / (1024 * 1024);
}

// QEMU backend only: the figure is read from QEMU's guest-RAM memfd.
describe.skipIf(e2eVmm() !== "qemu")("memory the guest frees", () => {
  // Free page reporting (host-agent/src/vmm/qemu/balloon.ts): the guest reports free 2 MiB blocks
  // about 2 s after they are freed and QEMU punches them out of the guest RAM memfd.
  it("goes back to the host: most of a 200 MiB tmpfs file, once removed", async () => {
    const { pid } = await dom.info();
    const write = await run("mkdir -p /run/qvm-free && mount -t tmpfs -o size=220m qvm-free /run/qvm-free && head -c 200M /dev/zero > /run/qvm-free/f");
    expect(write.exit, write.stderr).toEqual({ code: 0, signal: null });
    const peak = guestRamMiB(pid);
    expect((await run("rm /run/qvm-free/f && umount /run/qvm-free")).exit).toEqual({ code: 0, signal: null });
    let now = peak;
    for (let i = 0; i < 40 && peak - now < 100; i++) {
      await new Promise((r) => setTimeout(r, 500));
      now = guestRamMiB(pid);
    }
    expect(peak - now, `guest RAM held: ${peak.toFixed(0)} MiB with the file, ${now.toFixed(0)} MiB after`).toBeGreaterThanOrEqual(100);
  });
});
