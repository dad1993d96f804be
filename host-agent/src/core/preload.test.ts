// Preloaded disposables through qvmd's command surface, built by the composition root with fake
// VMs: `qvm run --dispvm` and a qrexec @dispvm call get the preloaded one and the pool refills; a
// preload is shown as such and refused by name (Exec, a qrexec call through the real router,
// unpause, console); the features qvmd keeps cannot be set; the template cannot start while it
// has preloads, and removing it takes them; a disposable gets its template's firewall, a preload
// again when handed out; a restarted qvmd takes back the paused preloads and destroys one whose
// hand-out was interrupted.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FrameType, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let store: DomainStore;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let logs: string[];

function compose(): Qvmd {
  let n = 0;
  return composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store,
    volumes: fakeVolumes(path.join(dir, "volumes")),
    vms,
    random: () => ((n++ * 37) % 9000) / 9999,
    log: (m) => logs.push(m),
  });
}

const exec = (target: { domain: string } | { dispvm: string }, argv = ["true"]) => qvmd.exec({ target, what: { argv }, noAutostart: false, user: "", cwd: "", env: {} });
const preloads = () => qvmd.list().filter((d) => d.isPreload);
/** Waits until `dvm` has `n` paused preloads, and returns their names. */
async function ready(n: number): Promise<string[]> {
  await expect.poll(() => preloads().filter((d) => d.state === "Paused").length, { timeout: 5000, interval: 5 }).toBe(n);
  return preloads().map((d) => d.name);
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-core-preload-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  store = DomainStore.open(path.join(dir, "data"));
  vms = new FakeVmFactory();
  vms.vsockDir = path.join(dir, "v");
  mkdirSync(vms.vsockDir);
  logs = [];
  qvmd = compose();
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  await qvmd.create({ name: "work", label: "red" });
  await qvmd.create({ name: "dvm", label: "red", properties: { template_for_dispvms: "true" } });
});

afterEach(async () => {
  await qvmd.setFeature("dvm", "preload-dispvm-max", "0").catch(() => {});
  await expect.poll(() => preloads().length, { timeout: 5000, interval: 5 }).toBe(0);
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
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

describe("preloaded disposables in qvmd", () => {
  it("boots nothing unasked; `qvm run --dispvm` takes the preloaded one and a new one is preloaded", async () => {
    await new Promise((r) => setTimeout(r, 20));
    expect(vms.started).toEqual([]);
    await qvmd.setFeature("dvm", "preload-dispvm-max", "1");
    const [p] = await ready(1);
    expect(qvmd.get(p!)).toMatchObject({ class: "DispVM", state: "Paused", isPreload: true });
    expect(qvmd.features("dvm")["preload-dispvm"]).toBe(p);

    const s = await exec({ dispvm: "dvm" }, ["echo", "hi"]);
    expect(s.domain).toBe(p);
    expect(qvmd.get(p!)).toMatchObject({ state: "Running", isPreload: false });
    await s.exit;
    expect(qvmd.list().map((d) => d.name)).not.toContain(p);
    const [next] = await ready(1);
    expect(next).not.toBe(p);
  });

  it("refuses a preload by name: Exec, a qrexec call through the router, unpause, console", async () => {
    writeFileSync(path.join(dir, "data/policy.d/00-test.policy"), "test.Echo * @anyvm @anyvm allow\n");
    await qvmd.setFeature("dvm", "preload-dispvm-max", "1");
    const [p] = await ready(1);
    const refusal = { code: "FAILED_PRECONDITION", message: expect.stringContaining(`${p} is a preloaded disposable of dvm`) };
    await expect(exec({ domain: p! })).rejects.toMatchObject(refusal);
    await expect(qvmd.unpause(p!)).rejects.toMatchObject(refusal);
    await expect(qvmd.console(p!)).rejects.toMatchObject(refusal);
    await qvmd.start("work");
    expect(await qrexecCall(path.join(dir, "v/work.vsock_50"), p!, "test.Echo")).toBe(0);
    expect(logs.some((l) => l.includes(`allowed to ${p}, but it cannot run there`) && l.includes("preloaded disposable"))).toBe(true);
    expect(vms.vms.get(p!)!.execs).toEqual([]);
    expect(qvmd.get(p!).state).toBe("Paused");
  });

  it("a qrexec @dispvm call is handed the preloaded disposable of the caller's default_dispvm", async () => {
    writeFileSync(path.join(dir, "data/policy.d/00-test.policy"), "qubes.VMShell * @anyvm @dispvm allow\n");
    await qvmd.setProperty("", "default_dispvm", "dvm");
    await qvmd.setFeature("dvm", "preload-dispvm-max", "1");
    const [p] = await ready(1);
    await qvmd.start("work");
    expect(await qrexecCall(path.join(dir, "v/work.vsock_50"), "@dispvm", "qubes.VMShell")).toBe(1);
    expect(vms.vms.get(p!)!.execs).toHaveLength(1);
    await expect.poll(() => qvmd.list().some((d) => d.name === p), { timeout: 5000, interval: 5 }).toBe(false);
    expect(await ready(1)).not.toContain(p);
  });

  it("the features qvmd keeps cannot be set; preload-dispvm-max takes a count", async () => {
    for (const f of ["preload-dispvm", "preload-dispvm-in-progress", "preload-dispvm-completed"]) {
      await expect(qvmd.setFeature("work", f, "x")).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("kept by qvmd") });
    }
    await expect(qvmd.removeFeature("dvm", "preload-dispvm")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    for (const v of ["-1", "two", "65", ""]) await expect(qvmd.setFeature("dvm", "preload-dispvm-max", v)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(qvmd.setProperty("", "preload_dispvm_max", "65")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("the template cannot start while it has preloads, and the refusal names the setting", async () => {
    await qvmd.setFeature("dvm", "preload-dispvm-max", "1");
    await ready(1);
    await expect(qvmd.start("dvm")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("preloaded ones go with `qvm features dvm preload-dispvm-max 0`") });
  });

  it("removing the template takes its preloads with it", async () => {
    await qvmd.setFeature("dvm", "preload-dispvm-max", "2");
    await ready(2);
    await qvmd.remove("dvm");
    expect(qvmd.list().map((d) => d.name)).toEqual(["tmpl", "work"]);
  });

  it("a disposable gets its template's firewall; a preload gets it again when handed out", async () => {
    await qvmd.setFirewall("dvm", ["action=accept dsthost=example.com", "action=drop"]);
    await qvmd.setFeature("dvm", "preload-dispvm-max", "1");
    const [p] = await ready(1);
    expect(qvmd.getFirewall(p!)).toEqual(["action=accept dsthost=example.com", "action=drop"]);
    await qvmd.setFirewall("dvm", ["action=drop"]);
    const s = await exec({ dispvm: "dvm" });
    expect(s.domain).toBe(p);
    expect(qvmd.getFirewall(p!)).toEqual(["action=drop"]);
    await s.exit;
    const [q] = await ready(1);
    await qvmd.setFeature("dvm", "preload-dispvm-max", "0");
    const cold = await exec({ dispvm: "dvm" }, ["sleep", "1"]);
    expect(cold.domain).not.toBe(q);
    expect(qvmd.getFirewall(cold.domain)).toEqual(["action=drop"]);
    cold.cancel();
  });

  it("the global preload_dispvm_max applies to default_dispvm", async () => {
    await qvmd.setProperty("", "default_dispvm", "dvm");
    await qvmd.setProperty("", "preload_dispvm_max", "1");
    await ready(1);
    await qvmd.resetProperty("", "preload_dispvm_max");
    await expect.poll(() => preloads().length, { timeout: 5000, interval: 5 }).toBe(0);
  });

  it("a restarted qvmd takes back paused preloads and destroys one whose hand-out was interrupted", async () => {
    await qvmd.setFeature("dvm", "preload-dispvm-max", "2");
    const [kept, interrupted] = await ready(2);
    await qvmd.close();
    // A crash between claim and use leaves the disposable marked in progress.
    store.update(interrupted!, (r) => void (r.features["preload-dispvm-in-progress"] = "1"));
    const old = vms;
    vms = new FakeVmFactory();
    vms.vsockDir = old.vsockDir;
    for (const n of [kept!, interrupted!]) {
      vms.leftRunning.set(n, old.vms.get(n)!);
      mkdirSync(path.join(dir, "run/domains", n), { recursive: true });
    }
    qvmd = compose();
    await qvmd.boot();
    expect(logs).toContain(`${kept}: preloaded disposable of dvm taken back (paused, as an earlier qvmd left it)`);
    expect(logs).toContain(`${interrupted}: disposable left by an earlier qvmd; destroying it`);
    expect(old.vms.get(interrupted!)!.gone).toBe(true);
    const now = await ready(2);
    expect(now[0]).toBe(kept);
    expect(vms.started).toEqual([now[1]]); // a new one in place of the one destroyed
    const s = await exec({ dispvm: "dvm" });
    expect(s.domain).toBe(kept);
    await s.exit;
  });
});
