// Starting and stopping domains: clean shutdown leaves nothing behind, a killed VMM is noticed,
// a silent agent or a missing root volume end in clear errors with the VM stopped.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { QemuDriver } from "@qvm/host-agent";
import { bootDomain, consoleTail, killLeftoverDomains, leftovers, testDirs, type TestDirs } from "./fixtures.js";

let dirs: TestDirs | undefined;
afterEach(async () => {
  await killLeftoverDomains();
  dirs?.cleanup();
  dirs = undefined;
});

describe("domain lifecycle with real VMs", () => {
  it("Shutdown powers the domain off and leaves no process, socket or file behind", async () => {
    dirs = testDirs("shutdown");
    const dom = await bootDomain("shutdown", dirs);
    const info = await dom.vm.info();
    expect(info.state).toBe("running");
    expect(leftovers(dirs).processes.length).toBe(2); // QEMU and vhost-device-vsock
    const exit = await dom.shutdown();
    expect(exit, consoleTail(dirs)).toEqual({ reason: "the guest powered off", clean: true });
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
    // The serial log outlives the domain, for diagnosis.
    expect(readFileSync(path.join(dirs.logDir, "console.log"), "utf8")).toContain("reboot: Power down");
  });

  it("pause and resume stop and restart the guest", async () => {
    dirs = testDirs("pause");
    const dom = await bootDomain("pause", dirs);
    await dom.pause();
    expect((await dom.vm.info()).state).toBe("paused");
    await expect(dom.agent.ping(2000)).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    await dom.resume();
    expect((await dom.vm.info()).state).toBe("running");
    expect((await dom.agent.ping()).agentVersion).toBeTruthy();
    await dom.kill();
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
  });

  it("re-attaches to a running VMM after letting go of it, and cleans up one that died meanwhile", async () => {
    dirs = testDirs("reattach");
    const dom = await bootDomain("reattach", dirs);
    const { pid } = await dom.vm.info();
    await dom.detach();
    expect(leftovers(dirs).processes.length).toBe(2); // still running: nobody stopped it

    const again = await new QemuDriver().attach(dirs.runtimeDir, dirs.logDir);
    expect(again).toBeDefined();
    expect(await again!.info()).toMatchObject({ state: "running", pid });
    again!.detach();

    process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 500));
    expect(await new QemuDriver().attach(dirs.runtimeDir, dirs.logDir)).toBeUndefined();
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
  });

  it("a QEMU killed with SIGKILL is noticed, reported and cleaned up", async () => {
    dirs = testDirs("sigkill");
    const dom = await bootDomain("sigkill", dirs);
    const { pid } = await dom.vm.info();
    const t0 = Date.now();
    process.kill(pid, "SIGKILL");
    const exit = await dom.vm.exited;
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(exit).toEqual({ reason: "the VMM was killed by SIGKILL", clean: false });
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
    await expect(dom.agent.ping(2000)).rejects.toMatchObject({ name: "QvmError" });
  });

  it("an agent that never answers ends in AGENT_TIMEOUT naming the serial log, with the VM stopped", async () => {
    dirs = testDirs("silent");
    const err = await bootDomain("silent", dirs, { kernelArgs: ["systemd.mask=qvm-agent.service"], agentTimeoutMs: 15_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "AGENT_TIMEOUT", message: expect.stringContaining(path.join(dirs.logDir, "console.log")) });
    // The guest's last console line, quoted, says how far the boot got.
    expect((err as Error).message).toMatch(/\(last line: "[^"\n]+"\)$/);
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
  });

  it("a missing root volume is reported by the initramfs, which powers off", async () => {
    dirs = testDirs("noroot");
    const err = await bootDomain("noroot", dirs, { kernelArgs: ["qvm.root=no-such-disk"] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "VMM_FAILED", message: expect.stringContaining("stopped while booting") });
    const log = readFileSync(path.join(dirs.logDir, "console.log"), "utf8");
    expect(log).toContain("qvm-initramfs: FATAL: no root volume: no virtio disk has serial 'no-such-disk'");
    expect(leftovers(dirs)).toEqual({ processes: [], runtimeDirExists: false });
  });
});
