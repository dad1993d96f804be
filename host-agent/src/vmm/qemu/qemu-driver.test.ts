// The QEMU driver's refusals and its distrust of the runtime directory, without booting a VM:
// TCG is refused unless allowed (audit finding 2), and a re-attach takes every path from the
// directory it was given, never from vmm.json (finding 9), nor a process of another domain
// whose path extends this one's (finding 15).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { VmSpec } from "../driver.js";
import { processAlive, processStartTime } from "../process.js";
import { bindToVfio, vfioRecordOf } from "../pci/vfio.js";
import { FakeSysfs } from "../../testing/fake-sysfs.js";
import { QemuDriver } from "./qemu-driver.js";

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  children.splice(0).forEach((c) => c.kill("SIGKILL"));
  dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true }));
});
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), "qvm-qd-"));
  dirs.push(d);
  return d;
};

/** A long sleep whose argv names `dir/` (as a VMM's names its runtime directory). */
async function fakeVmm(dir: string): Promise<number> {
  const c = spawn("bash", ["-c", `exec -a ${dir}/vmm sleep 60`], { stdio: "ignore" });
  children.push(c);
  await new Promise((r) => c.once("spawn", r));
  for (let i = 0; i < 100 && !processAlive(c.pid!, dir); i++) await new Promise((r) => setTimeout(r, 10));
  return c.pid!;
}

describe("QemuDriver", () => {
  it("refuses TCG unless allowed, saying why and how", async () => {
    const base = tmp();
    for (const f of ["vmlinuz", "initrd"]) writeFileSync(path.join(base, f), "");
    const spec: VmSpec = {
      name: "work",
      runtimeDir: path.join(base, "run"),
      logDir: path.join(base, "log"),
      kernel: { image: path.join(base, "vmlinuz"), initrd: path.join(base, "initrd") },
      disks: [],
      memoryMiB: 400,
      vcpus: 1,
      guestCid: 3,
    };
    const tcg = { accel: "tcg" as const, why: "the CPU has no vmx/svm flag" };
    await expect(new QemuDriver({ accel: tcg, allowTcg: false }).prepare(spec)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/TCG software emulation \(the CPU has no vmx\/svm flag\).*no hardware isolation.*--allow-tcg/),
    });
    const ok = await new QemuDriver({ accel: tcg, allowTcg: true }).prepare(spec);
    expect(ok.command).toContain("tcg,tb-size=128");
  });

  it("re-attach takes paths from the runtime directory, not from vmm.json, and never removes what vmm.json names", async () => {
    const base = tmp();
    const rt = path.join(base, "run/domains/work");
    const victim = path.join(base, "victim");
    mkdirSync(rt, { recursive: true });
    mkdirSync(victim);
    writeFileSync(path.join(victim, "precious"), "x");
    const pid = await fakeVmm(rt);
    writeFileSync(
      path.join(rt, "vmm.json"),
      JSON.stringify({ vmm: "qemu", name: "work", accel: "tcg", qemuPid: pid, vhostPid: pid, runtimeDir: victim, logDir: victim }),
    );
    const vm = await new QemuDriver().attach(rt, path.join(base, "logs/work"));
    expect(vm).toBeDefined();
    const info = await vm!.info();
    expect(info.vsockPath).toBe(path.join(rt, "vsock.sock"));
    expect(info.consoleLogPath).toBe(path.join(base, "logs/work/console.log"));
    await vm!.stop({ force: true });
    expect(existsSync(path.join(victim, "precious"))).toBe(true);
    expect(existsSync(rt)).toBe(false);
  });

  it("refuses a PCI device unless it can jail the VMM as root, and extra channels", async () => {
    const base = tmp();
    for (const f of ["vmlinuz", "initrd"]) writeFileSync(path.join(base, f), "");
    const spec: VmSpec = {
      name: "sys-net",
      runtimeDir: path.join(base, "run/domains/sys-net"),
      logDir: path.join(base, "log"),
      kernel: { image: path.join(base, "vmlinuz"), initrd: path.join(base, "initrd") },
      disks: [],
      memoryMiB: 400,
      vcpus: 1,
      guestCid: 3,
      devices: [{ id: "pci0", kind: "pci", address: "0000:02:00.0" }],
    };
    const driver = new QemuDriver({ accel: { accel: "kvm", why: "" } });
    await expect(driver.prepare(spec)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("only a qvmd running as root can pass through") });
    await expect(driver.prepare({ ...spec, devices: [], channels: [{ id: "gui0", kind: "vsock-port", port: 6000 }] })).rejects.toThrow("the qemu driver cannot attach gui0 to sys-net yet");
  });

  it("gives back the PCI devices of a VMM that died, or of a start that a crash cut short", async () => {
    const base = tmp();
    const rt = path.join(base, "run/domains/sys-net");
    const fake = new FakeSysfs();
    try {
      const driver = new QemuDriver({ pci: fake.host() });
      // A crash between binding and QEMU's start: no vmm.json, only the record.
      await bindToVfio(fake.host(), "sys-net", ["0000:02:00.0"], { uid: 900000005, gid: 900000005 }, vfioRecordOf(rt, "sys-net"), () => {});
      expect(fake.driverOf("0000:02:00.0")).toBe("vfio-pci");
      expect(await driver.attach(rt, path.join(base, "logs/sys-net"))).toBeUndefined();
      expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
      // A VMM that died while no qvmd watched.
      await bindToVfio(fake.host(), "sys-net", ["0000:02:00.0"], { uid: 900000005, gid: 900000005 }, vfioRecordOf(rt, "sys-net"), () => {});
      mkdirSync(rt, { recursive: true });
      writeFileSync(path.join(rt, "vmm.json"), JSON.stringify({ vmm: "qemu", name: "sys-net", accel: "kvm", qemuPid: 2 ** 22 + 1, vhostPid: 2 ** 22 + 1, runtimeDir: rt, logDir: rt }));
      expect(await driver.attach(rt, path.join(base, "logs/sys-net"))).toBeUndefined();
      expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
      expect(existsSync(vfioRecordOf(rt, "sys-net"))).toBe(false);
    } finally {
      fake.remove();
    }
  });

  it("a process of domain work2 does not pass for work's, nor a reused pid for the one recorded", async () => {
    const base = tmp();
    const work = path.join(base, "domains/work");
    const pid = await fakeVmm(`${work}2`);
    expect(processAlive(pid, work)).toBe(false);
    expect(processAlive(pid, `${work}2`)).toBe(true);
    const start = processStartTime(pid)!;
    expect(processAlive(pid, `${work}2`, start)).toBe(true);
    expect(processAlive(pid, `${work}2`, start + 1)).toBe(false);
  });
});
