// The core through its command surface, built by the composition root with fakes behind its
// seams (no VMs, no disks): one launcher for Exec and qrexec, disposables that never outlive
// their call, typed refusals, and the daemon's facts.
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let logs: string[];

async function collect(s: NodeJS.ReadableStream): Promise<string> {
  let out = "";
  for await (const c of s) out += String(c);
  return out;
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-core-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  vms = new FakeVmFactory();
  logs = [];
  let n = 0;
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [{ kind: "qemu" } as never],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes")),
    vms,
    random: () => (n++ % 10) / 10,
    log: (m) => logs.push(m),
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
    // The fake VM's vsock path does not exist, so the listener cannot be made: logged, not fatal.
    expect(logs.some((l) => l.includes("work: cannot attach qrexec listener"))).toBe(true);
    await qvmd.kill("work");
    expect(qvmd.attachmentsOf("work")).toEqual([]);
  });
});
