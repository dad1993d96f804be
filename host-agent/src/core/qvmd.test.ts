// The core through its command surface, built by the composition root with fakes behind its
// seams (no VMs, no disks): one launcher for Exec and qrexec, disposables that never outlive
// their call (nor their logs), a disposable's `@dispvm` call refused through the real router,
// typed refusals, limits given to composeQvmd, and the daemon's facts.
import { existsSync, mkdtempSync, rmSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FrameType, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes, type FakeDisk, fakeDriver } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let logs: string[];
let disk: FakeDisk;

async function collect(s: NodeJS.ReadableStream): Promise<string> {
  let out = "";
  for await (const c of s) out += String(c);
  return out;
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-core-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  vms = new FakeVmFactory();
  vms.vsockDir = path.join(dir, "v");
  mkdirSync(vms.vsockDir);
  logs = [];
  disk = { freeBytes: 1e15, overlayBytes: 0 };
  let n = 0;
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes"), disk),
    vms,
    random: () => (n++ % 10) / 10,
    log: (m) => logs.push(m),
    limits: { maxRunning: 3, maxGuestMemoryMiB: undefined },
  });
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  await qvmd.create({ name: "work", label: "red" });
  await qvmd.create({ name: "dvm", label: "red", properties: { template_for_dispvms: "true" } });
});

afterEach(async () => {
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("Qvmd", () => {
  it("tells what it runs under", () => {
    expect(qvmd.info()).toMatchObject({ accel: "tcg", dataDir: path.join(dir, "data"), pid: process.pid });
  });

  it("runs a program in a domain, starting it first, as its default_user", async () => {
    const s = await qvmd.exec({ target: { domain: "work" }, what: { argv: ["echo", "hi"] }, noAutostart: false, user: "", cwd: "", env: {} });
    expect(s.domain).toBe("work");
    expect(await collect(s.guestStdout)).toBe("echo hi\n");
    expect(await s.exit).toEqual({ code: 0, signal: null });
    expect(vms.vms.get("work")!.execs[0]).toMatchObject({ user: "user", command: ["echo", "hi"] });
    expect(qvmd.get("work").state).toBe("Running");
  });

  it("refuses a halted domain with autostart off, naming the flag", async () => {
    await expect(qvmd.exec({ target: { domain: "work" }, what: { shell: "true" }, noAutostart: true, user: "", cwd: "", env: {} })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining("--no-autostart"),
    });
    expect(vms.started).toEqual([]);
  });

  it("a disposable is gone before its caller learns the exit status", async () => {
    const s = await qvmd.exec({ target: { dispvm: "dvm" }, what: { argv: ["true"] }, noAutostart: true, user: "", cwd: "", env: {} });
    expect(s.domain).toMatch(/^disp\d+$/);
    expect(qvmd.list().map((d) => d.name)).toContain(s.domain);
    await s.exit;
    expect(qvmd.list().map((d) => d.name)).not.toContain(s.domain);
    expect(vms.vms.get(s.domain)!.gone).toBe(true);
  });

  it("a cancelled call destroys its disposable too", async () => {
    const s = await qvmd.exec({ target: { dispvm: "" }, what: { argv: ["sleep", "9"] }, noAutostart: false, user: "", cwd: "", env: {} }).catch((e: Error) => e);
    // no default_dispvm set: refused before anything is made
    expect(s).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("default_dispvm") });
    await qvmd.setProperty("", "default_dispvm", "dvm");
    const t = await qvmd.exec({ target: { dispvm: "" }, what: { argv: ["sleep", "9"] }, noAutostart: false, user: "", cwd: "", env: {} });
    t.cancel();
    await new Promise((r) => setTimeout(r, 10));
    expect(qvmd.list().map((d) => d.name)).toEqual(["dvm", "tmpl", "work"]);
  });

  it("a disposable whose start fails leaves nothing behind", async () => {
    vms.failNext = "the agent did not answer";
    await expect(qvmd.exec({ target: { dispvm: "dvm" }, what: { argv: ["true"] }, noAutostart: false, user: "", cwd: "", env: {} })).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    expect(qvmd.list().map((d) => d.name)).toEqual(["dvm", "tmpl", "work"]);
  });

  it("a service call runs qrexec-run as dom0 calling, with the sanitized argument", async () => {
    const s = await qvmd.exec({ target: { domain: "work" }, what: { service: "qubes.Test", argument: "a b" }, noAutostart: false, user: "", cwd: "", env: { X: "1" } });
    await s.exit;
    const e = vms.vms.get("work")!.execs[0]!;
    expect(e.command).toEqual(["/usr/lib/qvm/qrexec-run", "qubes.Test", "a b"]);
    expect(e.env).toMatchObject({ X: "1", QREXEC_REMOTE_DOMAIN: "dom0", QREXEC_REQUESTED_TARGET: "work" });
  });

  it("locks inside: concurrent tag and feature changes on one domain all land", async () => {
    await Promise.all([...Array(20)].map((_, i) => (i % 2 ? qvmd.addTag("work", `t${i}`) : qvmd.setFeature("work", `f${i}`, "1"))));
    expect(qvmd.tags("work")).toHaveLength(10);
    expect(Object.keys(qvmd.features("work"))).toHaveLength(10);
  });

  it("starting a domain attaches its qrexec listener and a stop releases it", async () => {
    await qvmd.start("work");
    expect(qvmd.attachmentsOf("work")).toContain("qvmd:qrexec listener");
    await qvmd.kill("work");
    expect(qvmd.attachmentsOf("work")).toEqual([]);
  });

  it("removing a domain removes its logs too", async () => {
    await qvmd.start("work");
    const logDir = path.join(dir, "data/logs/work");
    expect(existsSync(path.join(logDir, "console.log"))).toBe(true);
    await qvmd.kill("work");
    await qvmd.remove("work");
    expect(existsSync(logDir)).toBe(false);
  });

  it("takes the limits it is given: --max-running 3", async () => {
    await qvmd.create({ name: "w2", label: "red" });
    await qvmd.create({ name: "w3", label: "red" });
    for (const n of ["work", "w2", "tmpl"]) await qvmd.start(n);
    await expect(qvmd.start("w3")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: expect.stringContaining("the limit is 3 (qvmd --max-running N)") });
  });

  it("refuses a start the data disk cannot hold, naming --disk-reserve", async () => {
    disk.freeBytes = 3 * 1024 ** 3;
    disk.overlayBytes = 1024 ** 3;
    await qvmd.start("work"); // 1 GiB + the 2 GiB default reserve
    await expect(qvmd.start("tmpl")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: expect.stringContaining("(qvmd --disk-reserve MIB)") });
  });

  it("discards volatile overlays at boot for domains that do not run", async () => {
    await qvmd.start("work");
    await qvmd.close(); // qvmd exits; the VM would keep running, but this fake one is not found again
    mkdirSync(path.join(dir, "volumes/.volatile/gone"), { recursive: true });
    await qvmd.boot();
    expect(existsSync(path.join(dir, "volumes/.volatile/work"))).toBe(false);
    expect(existsSync(path.join(dir, "volumes/.volatile/gone"))).toBe(false);
  });
});

/** Calls `service` at `target` as the domain whose qrexec socket is `sock`; resolves to the RESULT byte. */
function qrexecCall(sock: string, target: string, service: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let buf = Buffer.alloc(0);
    c.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 6 && buf[0] === FrameType.RESULT) {
        resolve(buf[5]!);
        c.destroy();
      }
    });
    c.on("error", reject);
    c.on("close", () => resolve(-1));
    c.write(encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target, service, argument: "" }).finish()));
  });
}

describe("disposables through qrexec", () => {
  it("a disposable's @dispvm call is refused: the router hands the caller to the launcher", async () => {
    writeFileSync(path.join(dir, "data/policy.d/00-test.policy"), "qubes.VMShell * @anyvm @dispvm allow\n");
    await qvmd.setProperty("", "default_dispvm", "dvm");
    await qvmd.create({ name: "named", klass: "DispVM", template: "dvm", label: "red" });
    await qvmd.start("named");
    const before = qvmd.list().map((d) => d.name);
    expect(await qrexecCall(path.join(dir, "v/named.vsock_50"), "@dispvm", "qubes.VMShell")).toBe(0);
    expect(logs.some((l) => l.includes("disposables may not make disposables"))).toBe(true);
    expect(qvmd.list().map((d) => d.name)).toEqual(before);

    // An AppVM's call is allowed, runs in a new disposable, and the disposable is gone after it.
    await qvmd.start("work");
    expect(await qrexecCall(path.join(dir, "v/work.vsock_50"), "@dispvm", "qubes.VMShell")).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(qvmd.list().map((d) => d.name)).toEqual(before);
  });
});
