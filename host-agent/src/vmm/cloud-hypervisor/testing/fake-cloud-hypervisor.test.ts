// The fake cloud-hypervisor (fake-cloud-hypervisor.mjs) against our API client: it must answer
// as CH's API description says, write CH's event stream and play the hybrid vsock protocol, or
// the driver's tests against it prove nothing. Each test starts the executable as the driver
// would, in its own temporary directory, and stops it afterwards.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { ChApi } from "../ch-api.js";
import { chSchema } from "../test-support.js";

const FAKE = fileURLToPath(new URL("./fake-cloud-hypervisor.mjs", import.meta.url));
const MIB = 1024 * 1024;

interface Fake {
  proc: ChildProcess;
  dir: string;
  api: ChApi;
  sock: string;
  events: string;
  vsock: string;
  console: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running: Fake[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const f of running.splice(0)) {
    if (f.proc.exitCode === null && f.proc.signalCode === null) {
      f.proc.kill("SIGKILL");
      await f.exited;
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "fake-ch-"));
  dirs.push(d);
  return d;
}

/** Starts the fake with CH's command line as the driver gives it; resolves once it answers. */
async function start(env: Record<string, string> = {}, dir = tempDir()): Promise<Fake> {
  const sock = path.join(dir, "api.sock");
  const events = path.join(dir, "events.json");
  const proc = spawn(FAKE, ["--api-socket", `path=${sock}`, "--event-monitor", `path=${events}`, "--seccomp", "true", "--landlock", "--log-file", path.join(dir, "vmm.log"), "-v"], {
    env: { ...process.env, FAKE_CH_EXIT_WITH_PARENT: "1", FAKE_CH_MAX_LIFETIME_MS: "60000", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once("exit", (code, signal) => r({ code, signal })));
  const f: Fake = { proc, dir, api: new ChApi(sock, 2000), sock, events, vsock: path.join(dir, "vsock.sock"), console: path.join(dir, "console.sock"), exited };
  running.push(f);
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      await f.api.ping();
      return f;
    } catch (err) {
      if (proc.exitCode !== null || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** A VmConfig as the driver sends it (only the fields the fake looks at matter to it). */
function vmConfig(f: Fake) {
  return {
    payload: { kernel: "/vm/kernel", initramfs: "/vm/initrd", cmdline: "console=ttyS0" },
    cpus: { boot_vcpus: 2, max_vcpus: 2 },
    memory: { size: 400 * MIB, shared: true },
    disks: [{ id: "disk0", path: "/vm/disk0", readonly: false, serial: "root", image_type: "Qcow2" as const }],
    vsock: { cid: 3, socket: f.vsock },
    serial: { mode: "Socket" as const, socket: f.console },
    console: { mode: "Off" as const },
    rng: { src: "/dev/urandom" },
    balloon: { size: 0, deflate_on_oom: true, free_page_reporting: true },
  };
}
const create = (f: Fake, cfg = vmConfig(f)) => f.api.create(cfg as unknown as Parameters<ChApi["create"]>[0]);

/** The event file as CH writes it: pretty JSON objects, each followed by a blank line. */
function events(f: Fake): string[] {
  const text = readFileSync(f.events, "utf8");
  const chunks = text.split("\n\n");
  expect(chunks.pop()).toBe("");
  return chunks.map((c) => {
    const e = JSON.parse(c) as { timestamp: { secs: number; nanos: number }; source: string; event: string; properties: unknown };
    expect(c).toBe(JSON.stringify(e, null, 2));
    expect(Object.keys(e)).toEqual(["timestamp", "source", "event", "properties"]);
    expect(Number.isInteger(e.timestamp.secs) && Number.isInteger(e.timestamp.nanos)).toBe(true);
    return `${e.source}/${e.event}`;
  });
}

/**
 * Connects to a Unix socket, sends, and collects what arrives until it closes, `until` matches or
 * the deadline passes; the socket is closed then unless `keep`.
 */
function talk(socketPath: string, send: string, opts: { until?: RegExp; ms?: number; keep?: boolean } = {}): Promise<{ data: string; closed: boolean; sock: net.Socket }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let data = "";
    const done = (closed: boolean) => {
      clearTimeout(timer);
      sock.removeAllListeners("data");
      if (!opts.keep) sock.destroy();
      resolve({ data, closed, sock });
    };
    const timer = setTimeout(() => done(false), opts.ms ?? 1000);
    sock.on("error", reject);
    sock.on("data", (d: Buffer) => {
      data += d.toString();
      if (opts.until?.test(data)) done(false);
    });
    sock.on("close", () => done(true));
    sock.on("connect", () => sock.write(send));
  });
}

describe("fake cloud-hypervisor", () => {
  it("is an executable that takes CH's command line, refuses what clap refuses, and answers ping", async () => {
    expect(statSync(FAKE).mode & 0o111).not.toBe(0);
    const bad = spawnSync(FAKE, ["--api-socket", "path=/nonexistent/x.sock", "--bogus"], { encoding: "utf8" });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/unexpected argument '--bogus'/);
    const f = await start();
    expect(await f.api.ping()).toEqual({ version: "v53.0-fake" });
    const validate = chSchema("VmmPingResponse");
    const raw = await new Promise<string>((r) => {
      const s = net.connect(f.sock, () => s.end("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
      let t = "";
      s.on("data", (d: Buffer) => (t += d.toString()));
      s.on("close", () => r(t));
    });
    const ping = JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)) as unknown;
    expect(validate(ping), JSON.stringify(validate.errors)).toBe(true);
    expect(ping).toMatchObject({ pid: f.proc.pid, features: [] });
  });

  it("runs a VM's life: create, boot, info, pause, snapshot, resume, power button → exit 0, with CH's events", async () => {
    const f = await start();
    await create(f);
    expect(await f.api.info()).toEqual({ state: "Created", memoryActualSize: 400 * MIB });
    await f.api.boot();
    expect((await f.api.info()).state).toBe("Running");
    await f.api.pause();
    expect((await f.api.info()).state).toBe("Paused");
    const snap = path.join(f.dir, "snap");
    mkdirSync(snap);
    await f.api.snapshot(snap);
    expect(JSON.parse(readFileSync(path.join(snap, "config.json"), "utf8"))).toEqual(vmConfig(f));
    expect(JSON.parse(readFileSync(path.join(snap, "state.json"), "utf8"))).toMatchObject({ fake: true, vm_state: "Paused" });
    expect(existsSync(path.join(snap, "memory-ranges"))).toBe(true);
    await f.api.resume();
    expect((await f.api.info()).state).toBe("Running");
    await f.api.powerButton();
    expect(await f.exited).toEqual({ code: 0, signal: null });
    expect([f.sock, f.vsock, f.console].filter((p) => existsSync(p))).toEqual([]);
    expect(events(f)).toEqual([
      "vmm/starting",
      "vm/booting",
      "vm/booted",
      "vm/pausing",
      "vm/paused",
      "vm/snapshotting",
      "vm/snapshotted",
      "vm/resuming",
      "vm/resumed",
      "vm/shutdown",
      "vm/deleted",
      "vmm/shutdown",
    ]);
  });

  it("restores a snapshot in a fresh VMM, paused unless resume is asked, and only where no VM exists", async () => {
    const first = await start();
    await create(first);
    await first.api.boot();
    await first.api.pause();
    const snap = path.join(first.dir, "snap");
    mkdirSync(snap);
    await first.api.snapshot(snap);
    await first.api.shutdownVmm();
    expect((await first.exited).code).toBe(0);

    const paused = await start();
    await paused.api.restore(snap);
    const info = await paused.api.info();
    expect(info.state).toBe("Paused");
    // The description gives 404 for a restore where a VM already exists.
    await expect(paused.api.restore(snap)).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("HTTP 404") });
    await paused.api.resume();
    expect((await paused.api.info()).state).toBe("Running");
    // The snapshot names the same vsock and console sockets: one restored VM at a time.
    await paused.api.shutdownVmm();
    await paused.exited;

    const resumed = await start();
    await resumed.api.restore(snap, { resume: true });
    expect((await resumed.api.info()).state).toBe("Running");
    expect(events(resumed)).toEqual(["vmm/starting", "vm/restoring", "vm/restored", "vm/resuming", "vm/resumed"]);
    // Its vm.info validates against CH's description.
    const validate = chSchema("VmInfo");
    const body = await new Promise<unknown>((resolve) => {
      const s = net.connect(resumed.sock, () => s.end("GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
      let t = "";
      s.on("data", (d: Buffer) => (t += d.toString()));
      s.on("close", () => resolve(JSON.parse(t.slice(t.indexOf("\r\n\r\n") + 4))));
    });
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
  });

  it("answers a call in the wrong state with 405 (FAILED_PRECONDITION) and one without a VM with 404", async () => {
    const f = await start();
    await expect(f.api.boot()).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("HTTP 404") });
    await expect(f.api.info()).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("HTTP 404") });
    await create(f);
    await expect(f.api.pause()).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("HTTP 405") });
    await expect(create(f)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await f.api.boot();
    await expect(f.api.snapshot(f.dir)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("running") });
    await expect(f.api.resume()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(f.api.resizeDisk("disk9", MIB)).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("HTTP 404") });
    await f.api.resizeDisk("disk0", 2 * MIB);
    // vm.shutdown stops the guest but not the VMM.
    await f.api.shutdown();
    expect((await f.api.info()).state).toBe("Shutdown");
    expect(existsSync(f.vsock)).toBe(false);
    await f.api.shutdownVmm();
    expect((await f.exited).code).toBe(0);
    expect(events(f).slice(-3)).toEqual(["vm/shutdown", "vm/deleted", "vmm/shutdown"]);
  });

  it("can die mid-call, answer slowly, or answer vm.info with garbage", async () => {
    const dies = await start({ FAKE_CH_DIE_ON: "vm.boot" });
    await create(dies);
    await expect(dies.api.boot()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringMatching(/still running/) });
    expect((await dies.exited).code).toBe(1);

    const slow = await start({ FAKE_CH_SLOW_MS: "300" });
    await expect(new ChApi(slow.sock, 100).info()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringMatching(/within 100 ms/) });

    const garbage = await start({ FAKE_CH_GARBAGE_INFO: "1" });
    await create(garbage);
    await expect(garbage.api.info()).rejects.toMatchObject({ code: "VMM_FAILED", message: expect.stringMatching(/not JSON/) });
  });

  it("plays the hybrid vsock protocol: CONNECT/OK then echo, a closed port closed without a word, and the guest's dial to <socket>_<port>", async () => {
    const dir = tempDir();
    // The host's listener for guest port 5000, there before the guest dials.
    const dialed = new Promise<string>((resolve) => {
      const server = net.createServer((s) => {
        let t = "";
        s.on("data", (d: Buffer) => {
          t += d.toString();
          if (t.endsWith("\n")) {
            s.destroy();
            server.close();
            resolve(t);
          }
        });
      });
      server.listen(path.join(dir, "vsock.sock_5000"));
    });
    const f = await start({ FAKE_CH_GUEST_PORTS: "1024,2048", FAKE_CH_DIAL_HOST_PORT: "5000" }, dir);
    await create(f);
    // The serial console socket exists from vm.create on.
    expect((await talk(f.console, "", { until: /\n/ })).data).toBe("fake guest console\n");
    await f.api.boot();
    expect(await dialed).toBe("hello from guest\n");

    const ok = await talk(f.vsock, "CONNECT 2048\n", { until: /^OK \d+\n/, keep: true });
    expect(ok.data).toMatch(/^OK \d+\n$/);
    const echo = new Promise<string>((resolve) => {
      let t = "";
      ok.sock.on("data", (d: Buffer) => {
        t += d.toString();
        if (t.endsWith("\n")) resolve(t);
      });
    });
    ok.sock.write("ping\u0000pong\n");
    expect(await echo).toBe("ping\u0000pong\n");
    ok.sock.destroy();

    // Any case, data right behind the command: as CH's muxer reads it.
    expect((await talk(f.vsock, "connect 1024\nearly", { until: /early/ })).data).toMatch(/^OK \d+\nearly$/);
    const refused = await talk(f.vsock, "CONNECT 4444\n");
    expect(refused).toMatchObject({ data: "", closed: true });
    const malformed = await talk(f.vsock, "HELLO\n");
    expect(malformed).toMatchObject({ data: "", closed: true });
  });

  it("ends as CH does when the guest powers off on its own and on SIGTERM, leaving no socket", async () => {
    const off = await start({ FAKE_CH_POWEROFF_AFTER_MS: "100" });
    await create(off);
    await off.api.boot();
    expect(await off.exited).toEqual({ code: 0, signal: null });
    expect(events(off).slice(-3)).toEqual(["vm/shutdown", "vm/deleted", "vmm/shutdown"]);

    const term = await start();
    await create(term);
    await term.api.boot();
    expect(existsSync(term.vsock) && existsSync(term.console)).toBe(true);
    term.proc.kill("SIGTERM");
    expect(await term.exited).toEqual({ code: 0, signal: null });
    expect([term.sock, term.vsock, term.console].filter((p) => existsSync(p))).toEqual([]);
  });
});
