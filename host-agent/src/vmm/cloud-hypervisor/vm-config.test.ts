// Contract test: every body the cloud-hypervisor driver sends is valid for CH's own OpenAPI
// description, made strict (test-support.ts), and says what the driver means.
import { describe, expect, it } from "vitest";
import type { VmSpec } from "../driver.js";
import { chSchema } from "./test-support.js";
import { buildVmConfig, netConfig } from "./vm-config.js";
import { chArgs } from "./ch-driver.js";
import { chFiles, fixedView, hostView, viewMap } from "./view.js";

const spec: VmSpec = {
  name: "work",
  runtimeDir: "/run/qvm/domains/work",
  logDir: "/var/lib/qvm/logs/work",
  kernel: { image: "/var/lib/qvm/images/kernels/k/vmlinux", initrd: "/var/lib/qvm/images/kernels/k/initrd.img" },
  kernelArgs: ["systemd.hostname=work"],
  disks: [
    { serial: "root", path: "/var/lib/qvm/volatile/work/root.qcow2", format: "qcow2", readonly: false, backingFiles: ["/var/lib/qvm/images/templates/t/root.img"] },
    { serial: "private", path: "/var/lib/qvm/volumes/work/private.qcow2", format: "qcow2", readonly: false },
    { serial: "modules", path: "/var/lib/qvm/images/kernels/k/modules.img", format: "raw", readonly: true },
  ],
  memoryMiB: 400,
  vcpus: 2,
  guestCid: 3,
};
const tap = { id: "eth0", mac: "00:16:3e:00:00:01", backend: { kind: "tap" as const, ifname: "qvm-tap0" } };

describe("cloud-hypervisor request bodies against CH's OpenAPI description", () => {
  it("VmConfig is valid in both views, with a tap link, every field one CH knows", () => {
    const validate = chSchema("VmConfig");
    for (const view of [fixedView(spec), hostView(spec)]) {
      expect(validate(buildVmConfig(spec, view)), JSON.stringify(validate.errors)).toBe(true);
      expect(validate(buildVmConfig({ ...spec, nics: [tap] }, view)), JSON.stringify(validate.errors)).toBe(true);
    }
  });

  it("the strict check catches a field CH does not know and a wrong enum", () => {
    const validate = chSchema("VmConfig");
    const body = buildVmConfig(spec, fixedView(spec)) as unknown as Record<string, unknown>;
    expect(validate({ ...body, cpus: { boot_vcpus: 2, max_vcpus: 2, turbo: true } })).toBe(false);
    expect(validate({ ...body, serial: { mode: "Telnet" } })).toBe(false);
  });

  it("vm.add-net's NetConfig is valid", () => {
    const validate = chSchema("NetConfig");
    expect(validate(netConfig("work", tap)), JSON.stringify(validate.errors)).toBe(true);
  });
});

describe("cloud-hypervisor VmConfig", () => {
  it("jailed: names only the fixed view, so a snapshot of it restores as another domain", () => {
    const body = buildVmConfig(spec, fixedView(spec));
    expect(body.payload).toEqual({ kernel: "/vm/kernel", initramfs: "/vm/initrd", cmdline: expect.stringContaining("systemd.hostname=work") });
    expect(body.disks.map((d) => d.path)).toEqual(["/vm/disk0", "/vm/disk1", "/vm/disk2"]);
    expect(body.vsock).toEqual({ cid: 3, socket: "/vm/run/vsock.sock" });
    expect(body.serial).toEqual({ mode: "Socket", socket: "/vm/run/console.sock" });
    expect(JSON.stringify(body)).not.toContain("/run/qvm/domains/work");
    // What the jail shows there: this domain's own files.
    expect(Object.fromEntries(viewMap(spec, fixedView(spec)))).toEqual({
      "/run/qvm/domains/work": "/vm/run",
      "/var/lib/qvm/logs/work": "/vm/log",
      [spec.kernel.image]: "/vm/kernel",
      [spec.kernel.initrd]: "/vm/initrd",
      [spec.disks[0]!.path]: "/vm/disk0",
      [spec.disks[1]!.path]: "/vm/disk1",
      [spec.disks[2]!.path]: "/vm/disk2",
    });
  });

  it("boots with memory in bytes, disks by serial, backing files allowed only where the overlay has one", () => {
    const body = buildVmConfig(spec, hostView(spec));
    expect(body.payload.kernel).toBe(spec.kernel.image);
    expect(body.memory).toEqual({ size: 400 * 1024 * 1024, shared: true });
    expect(body.disks.map((d) => [d.serial, d.image_type, d.readonly, d.backing_files ?? false])).toEqual([
      ["root", "Qcow2", false, true],
      ["private", "Qcow2", false, false],
      ["modules", "Raw", true, false],
    ]);
    expect(body.vsock).toEqual({ cid: 3, socket: "/run/qvm/domains/work/vsock.sock" });
    expect(body.balloon).toMatchObject({ free_page_reporting: true });
  });

  it("turns landlock on with the runtime directory writable and the backing files readable", () => {
    const body = buildVmConfig(spec, fixedView(spec));
    expect(body.landlock_enable).toBe(true);
    expect(body.landlock_rules).toEqual([
      { path: "/vm/run", access: "rw" },
      { path: "/var/lib/qvm/images/templates/t/root.img", access: "r" },
    ]);
  });

  it("a snapshot source may write its snapshot and read the directory its restored copies read from", () => {
    const source = { ...spec, snapshotDir: "/var/lib/qvm/dispvm-snapshots/dvm/k/vm", readPaths: ["/var/lib/qvm/dispvm-snapshots/dvm/k"] };
    expect(buildVmConfig(source, fixedView(source)).landlock_rules).toEqual([
      { path: "/vm/run", access: "rw" },
      { path: "/vm/snapshot", access: "rw" },
      { path: "/var/lib/qvm/images/templates/t/root.img", access: "r" },
      { path: "/var/lib/qvm/dispvm-snapshots/dvm/k", access: "r" },
    ]);
    expect(buildVmConfig(source, hostView(source)).landlock_rules[1]).toEqual({ path: source.snapshotDir, access: "rw" });
  });

  it("starts CH with its API socket, event monitor and seccomp, where the view puts them", () => {
    expect(chArgs(fixedView(spec))).toEqual(["--api-socket", "path=/vm/run/api.sock", "--event-monitor", "path=/vm/log/vmm-events.log", "--seccomp", "true"]);
    expect(chFiles(spec).apiSocket).toBe("/run/qvm/domains/work/api.sock");
  });

  it("refuses what it cannot express, naming the way out", () => {
    expect(() => buildVmConfig({ ...spec, nics: [{ id: "eth0", mac: "00:16:3e:00:00:01", backend: { kind: "stream-unix", path: "/x" } }] }, fixedView(spec))).toThrow(/vmm qemu|tap uplink/);
    expect(() => buildVmConfig({ ...spec, devices: [{ id: "usb1", kind: "usb", address: "1", device: "tablet" }] }, fixedView(spec))).toThrow(/vmm qemu/);
  });
});
