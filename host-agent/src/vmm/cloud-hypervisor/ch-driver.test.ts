// The cloud-hypervisor driver against a fake cloud-hypervisor that answers as CH's API documents
// (testing/fake-cloud-hypervisor.mjs): its state machine (start, pause, resume, stop, re-attach),
// the event monitor, the hybrid vsock handshake both ways, hot-plug of links, and the failures:
// a missing binary, no KVM, a VMM that dies mid-call, a guest that powers off or a VMM killed.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { VmHandle, VmSpec } from "../driver.js";
import { processAlive } from "../process.js";
import { CloudHypervisorDriver, CH_INSTALL_HINT } from "./ch-driver.js";

const FAKE = path.join(__dirname, "testing/fake-cloud-hypervisor.mjs");
const KVM = { accel: "kvm" as const, why: "test" };

let dir = "";
let handles: VmHandle[] = [];

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-ch-driver-"));
  for (const f of ["vmlinux", "initrd.img", "root.img", "modules.img"]) writeFileSync(path.join(dir, f), "");
});
afterEach(async () => {
  for (const h of handles.splice(0)) await h.stop({ force: true }).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

function spec(name = "work"): VmSpec {
  return {
    name,
    runtimeDir: path.join(dir, "run", name),
    logDir: path.join(dir, "logs", name),
    kernel: { image: path.join(dir, "vmlinux"), initrd: path.join(dir, "initrd.img") },
    disks: [
      { serial: "root", path: path.join(dir, "root.img"), format: "raw", readonly: false },
      { serial: "modules", path: path.join(dir, "modules.img"), format: "raw", readonly: true },
    ],
    memoryMiB: 256,
    vcpus: 1,
    guestCid: 3,
  };
}

function driver(env: Record<string, string> = {}) {
  return new CloudHypervisorDriver({ binary: FAKE, accel: KVM, env: { ...process.env, FAKE_CH_MAX_LIFETIME_MS: "60000", ...env } });
}

async function start(d = driver(), s = spec()) {
  const vm = await d.start(await d.prepare(s));
  handles.push(vm);
  return vm;
}

/** The hybrid vsock handshake: CONNECT <port>, then an OK line, then the guest's service. */
function dialGuest(vsock: string, port: number): Promise<{ reply: string; sock: net.Socket }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(vsock);
    let got = "";
    sock.on("error", reject);
    sock.on("close", () => resolve({ reply: got, sock }));
    sock.on("connect", () => sock.write(`CONNECT ${port}\n`));
    sock.on("data", (c: Buffer) => {
      got += c.toString();
      if (got.includes("\n")) resolve({ reply: got, sock });
    });
  });
}

describe("cloud-hypervisor driver", () => {
  it("names the install step when the binary is missing, and refuses a host without KVM", async () => {
    await expect(new CloudHypervisorDriver({ binary: path.join(dir, "nope"), accel: KVM }).checkHost()).rejects.toMatchObject({ code: "MISSING_DEPENDENCY" });
    const prevPath = process.env.PATH;
    const prevBin = process.env.QVM_CLOUD_HYPERVISOR;
    process.env.PATH = dir;
    delete process.env.QVM_CLOUD_HYPERVISOR;
    try {
      await expect(new CloudHypervisorDriver({ accel: KVM }).prepare(spec())).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringContaining(CH_INSTALL_HINT) });
    } finally {
      process.env.PATH = prevPath;
      if (prevBin !== undefined) process.env.QVM_CLOUD_HYPERVISOR = prevBin;
    }
    await expect(new CloudHypervisorDriver({ binary: FAKE, accel: { accel: "tcg", why: "the CPU has no vmx/svm flag" } }).prepare(spec())).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/needs hardware KVM.*vmx\/svm.*vmm qemu/),
    });
  });

  it("starts through the API: created, booted, running, with the hybrid vsock on the domain's path", async () => {
    const vm = await start();
    const info = await vm.info();
    expect(info).toMatchObject({ vmm: "cloud-hypervisor", accel: "kvm", state: "running", vsockPath: path.join(spec().runtimeDir, "vsock.sock") });
    expect(processAlive(info.pid)).toBe(true);
    // Host -> guest: the agent's port answers OK and then the guest's service (an echo here).
    const ok = await dialGuest(info.vsockPath, 1024);
    expect(ok.reply).toMatch(/^OK \d+\n$/);
    ok.sock.write("ping");
    const echo = await new Promise<string>((r) => ok.sock.once("data", (c: Buffer) => r(c.toString())));
    expect(echo).toBe("ping");
    ok.sock.destroy();
    // A port nobody listens on in the guest: closed without a reply, as CH does.
    expect((await dialGuest(info.vsockPath, 4444)).reply).toBe("");
  });

  it("connects the guest's calls to <vsock>_<port>, where qvmd listens (qrexec, Exec data)", async () => {
    const s = spec();
    mkdirSync(s.runtimeDir, { recursive: true });
    const got = new Promise<string>((resolve) => {
      const server = net.createServer((c) => c.on("data", (b: Buffer) => (resolve(b.toString()), server.close(), c.destroy())));
      server.listen(path.join(s.runtimeDir, "vsock.sock_51"));
    });
    await start(driver({ FAKE_CH_DIAL_HOST_PORT: "51" }), s);
    expect(await got).toBe("hello from guest\n");
  });

  it("pauses and resumes through the API, resizes a disk by its id, and snapshots a paused VM", async () => {
    const snap = path.join(dir, "snap");
    mkdirSync(snap);
    const vm = await start(driver(), { ...spec(), snapshotDir: snap });
    await expect(vm.capabilities.snapshot!.snapshot()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" }); // a running VM: refused (405)
    await vm.pause();
    expect((await vm.info()).state).toBe("paused");
    await vm.capabilities.snapshot!.snapshot();
    expect(existsSync(path.join(snap, "config.json"))).toBe(true);
    const other = await start(driver(), spec("other"));
    await expect(other.capabilities.snapshot!.snapshot()).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await vm.resume();
    expect((await vm.info()).state).toBe("running");
    await vm.resizeDisk(0, 1024 * 1024 * 1024);
    await expect(vm.resizeDisk(7, 1)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("hot-plugs a tap link and removes it; refuses a socket link and devices, naming the way out", async () => {
    const vm = await start();
    const hp = vm.capabilities.hotplug!;
    await hp.addNic({ id: "eth0", mac: "00:16:3e:00:00:01", backend: { kind: "tap", ifname: "qvm-tap0" } });
    await expect(hp.addNic({ id: "eth0", mac: "00:16:3e:00:00:02", backend: { kind: "tap", ifname: "qvm-tap1" } })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await hp.removeNic("eth0");
    await expect(hp.removeNic("eth0")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(hp.addNic({ id: "eth1", mac: "00:16:3e:00:00:03", backend: { kind: "dgram-unix", local: "/a", remote: "/b" } })).rejects.toThrow(/vmm qemu/);
    await expect(hp.addDevice({ id: "usb1", kind: "usb", address: "1", device: "tablet" })).rejects.toThrow(/vmm qemu/);
  });

  it("stops with the power button: the guest powers off, the VMM ends, its runtime directory goes", async () => {
    const vm = await start();
    const exit = await vm.stop({ timeoutMs: 5000 });
    expect(exit).toEqual({ reason: "the guest powered off", clean: true });
    expect(existsSync(spec().runtimeDir)).toBe(false);
  });

  it("notices a guest that powers off by itself, and a VMM killed under it", async () => {
    const off = await start(driver({ FAKE_CH_POWEROFF_AFTER_MS: "200" }));
    expect(await off.exited).toEqual({ reason: "the guest powered off", clean: true });
    const killed = await start(driver(), spec("other"));
    process.kill((await killed.info()).pid, "SIGKILL");
    expect(await killed.exited).toMatchObject({ clean: false, reason: expect.stringMatching(/killed by SIGKILL/) });
    expect(existsSync(spec("other").runtimeDir)).toBe(false);
  });

  it("re-attaches from the runtime directory after a detach, and stops what it attached to", async () => {
    const d = driver();
    const vm = await start(d);
    const pid = (await vm.info()).pid;
    vm.detach();
    handles = [];
    const again = await d.attach(spec().runtimeDir, spec().logDir);
    expect(again).toBeDefined();
    handles.push(again!);
    expect(await again!.info()).toMatchObject({ state: "running", pid });
    await expect(d.start(await d.prepare(spec()))).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/already running/) });
    expect((await again!.stop({ timeoutMs: 5000 })).clean).toBe(true);
    expect(await d.attach(spec().runtimeDir, spec().logDir)).toBeUndefined();
  });

  it("fails a start whose VMM dies mid-call, leaving nothing behind", async () => {
    const d = driver({ FAKE_CH_DIE_ON: "vm.boot" });
    await expect(d.start(await d.prepare(spec()))).rejects.toMatchObject({ code: "VMM_FAILED" });
    expect(existsSync(spec().runtimeDir)).toBe(false);
  });

  it("restores only inside the jail, which maps the snapshot's paths to the domain's files", async () => {
    await expect(driver().restore(spec(), dir)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/jail/) });
  });
});
