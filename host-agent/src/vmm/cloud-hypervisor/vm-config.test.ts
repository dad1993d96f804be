// Contract test: the VmConfig the cloud-hypervisor driver sends is valid for CH's own OpenAPI
// description, made strict (test-support.ts).
import { describe, expect, it } from "vitest";
import type { VmSpec } from "../driver.js";
import { chSchema } from "./test-support.js";
import { buildVmConfig } from "./vm-config.js";

const spec: VmSpec = {
  name: "work",
  runtimeDir: "/run/qvm/domains/work",
  logDir: "/var/lib/qvm/logs/work",
  kernel: { image: "/var/lib/qvm/images/kernels/k/vmlinux", initrd: "/var/lib/qvm/images/kernels/k/initrd.img" },
  kernelArgs: ["systemd.hostname=work"],
  disks: [
    { serial: "root", path: "/var/lib/qvm/volatile/work/root.qcow2", format: "qcow2", readonly: false },
    { serial: "private", path: "/var/lib/qvm/volumes/work/private.qcow2", format: "qcow2", readonly: false },
    { serial: "modules", path: "/var/lib/qvm/images/kernels/k/modules.img", format: "raw", readonly: true },
  ],
  memoryMiB: 400,
  vcpus: 2,
  guestCid: 3,
};
const paths = { vsockSocket: "/run/qvm/domains/work/vsock.sock", consoleSocket: "/run/qvm/domains/work/console.sock" };

describe("cloud-hypervisor VmConfig against CH's OpenAPI description", () => {
  it("is valid, every field one CH knows", () => {
    const validate = chSchema("VmConfig");
    const body = buildVmConfig(spec, paths);
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
  });

  it("the strict check catches a field CH does not know and a wrong enum", () => {
    const validate = chSchema("VmConfig");
    const body = buildVmConfig(spec, paths) as unknown as Record<string, unknown>;
    expect(validate({ ...body, cpus: { boot_vcpus: 2, max_vcpus: 2, turbo: true } })).toBe(false);
    expect(validate({ ...body, serial: { mode: "Telnet" } })).toBe(false);
  });
});

describe("cloud-hypervisor VmConfig", () => {
  it("boots the PVH image with the domain's command line, memory in bytes, disks by serial", () => {
    const body = buildVmConfig(spec, paths);
    expect(body.payload).toEqual({ kernel: spec.kernel.image, initramfs: spec.kernel.initrd, cmdline: expect.stringContaining("systemd.hostname=work") });
    expect(body.memory).toEqual({ size: 400 * 1024 * 1024, shared: true });
    expect(body.disks.map((d) => [d.serial, d.image_type, d.readonly])).toEqual([["root", "Qcow2", false], ["private", "Qcow2", false], ["modules", "Raw", true]]);
    expect(body.vsock).toEqual({ cid: 3, socket: paths.vsockSocket });
    expect(body.balloon).toMatchObject({ free_page_reporting: true });
  });

  it("refuses what it cannot express yet, naming the way out", () => {
    expect(() => buildVmConfig({ ...spec, nics: [{ id: "eth0", mac: "00:16:3e:00:00:01", backend: { kind: "stream-unix", path: "/x" } }] }, paths)).toThrow(/netvm|QEMU backend/);
  });
});
