import { describe, expect, it } from "vitest";
import { buildQemuArgs, kernelCommandLine, qemuEscape } from "./qemu-args.js";
import type { VmSpec } from "../driver.js";

const spec: VmSpec = {
  name: "work",
  runtimeDir: "/run/qvm/domains/work",
  logDir: "/var/lib/qvm/logs/work",
  kernel: { vmlinuz: "/k/vmlinuz", initrd: "/k/initrd.img" },
  disks: [
    { serial: "root", path: "/run/qvm/domains/work/root.qcow2", format: "qcow2", readonly: false },
    { serial: "modules", path: "/k/modules,1.img", format: "raw", readonly: true },
  ],
  memoryMiB: 800,
  vcpus: 2,
  guestCid: 3,
};
const paths = { qmpSocket: "/r/qmp.sock", consoleSocket: "/r/console.sock", consoleLog: "/l/console.log", vhostUserSocket: "/r/vu.sock" };
const value = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe("QEMU command line", () => {
  it("uses microvm with guest RAM in a shared memfd, as vhost-user needs", () => {
    const args = buildQemuArgs(spec, "tcg", paths);
    expect(value(args, "-machine")[0]).toMatch(/^microvm,memory-backend=mem,/);
    expect(value(args, "-accel")).toEqual(["tcg"]);
    expect(value(args, "-object")).toContain("memory-backend-memfd,id=mem,size=800M,share=on");
    expect(value(args, "-m")).toEqual(["800M"]);
    expect(value(args, "-device")).toContain("vhost-user-vsock-device,chardev=vsock");
  });

  it("bounds TCG's translation cache and turns on QEMU's seccomp filter with every deny option", () => {
    expect(value(buildQemuArgs(spec, "tcg", paths, undefined, 128), "-accel")).toEqual(["tcg,tb-size=128"]);
    expect(value(buildQemuArgs(spec, "kvm", paths, undefined, 128), "-accel")).toEqual(["kvm"]);
    expect(value(buildQemuArgs(spec, "kvm", paths), "-sandbox")).toEqual(["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
  });

  it("uses -cpu max under TCG and host under KVM (PLATFORM.md: -cpu host fails without KVM)", () => {
    expect(value(buildQemuArgs(spec, "tcg", paths), "-cpu")).toEqual(["max"]);
    expect(value(buildQemuArgs(spec, "kvm", paths), "-cpu")).toEqual(["host"]);
  });

  it("passes the host TSC rate under TCG only (PIT calibration hangs TCG boots)", () => {
    expect(value(buildQemuArgs(spec, "tcg", paths, 2596132), "-append")[0]).toContain(" tsc_early_khz=2596132");
    expect(value(buildQemuArgs(spec, "kvm", paths, 2596132), "-append")[0]).not.toContain("tsc_early_khz");
    expect(value(buildQemuArgs({ ...spec, vcpus: 4 }, "tcg", paths), "-smp")).toEqual(["4"]);
  });

  it("never disables pit/pic/rtc (boot stalls for a minute under TCG)", () => {
    const machine = value(buildQemuArgs(spec, "tcg", paths), "-machine")[0]!;
    expect(machine).not.toMatch(/pit=off|pic=off|rtc=off/);
  });

  it("attaches disks by serial with their access mode and escapes commas in paths", () => {
    const args = buildQemuArgs(spec, "tcg", paths);
    const drives = value(args, "-drive");
    expect(drives[0]).toContain("format=qcow2,if=none,readonly=off");
    expect(drives[1]).toContain("file=/k/modules,,1.img,format=raw,if=none,readonly=on");
    expect(value(args, "-device")).toEqual(expect.arrayContaining(["virtio-blk-device,drive=disk0,serial=root", "virtio-blk-device,drive=disk1,serial=modules"]));
  });

  it("logs the serial console to a file while serving it on a socket", () => {
    const chardevs = value(buildQemuArgs(spec, "tcg", paths), "-chardev");
    expect(chardevs[0]).toBe("socket,id=console,path=/r/console.sock,server=on,wait=off,logfile=/l/console.log,logappend=on");
  });

  it("appends extra kernel arguments after qvm's own", () => {
    const cmdline = kernelCommandLine({ ...spec, kernelArgs: ["qvm.debug"] });
    expect(cmdline.startsWith("console=ttyS0 ")).toBe(true);
    expect(cmdline.endsWith(" qvm.debug")).toBe(true);
  });

  it("escapes commas", () => expect(qemuEscape("a,b,,c")).toBe("a,,b,,,,c"));

  it("passes a PCI device through with vfio-pci on microvm's PCIe bus, found through its stand-in sysfs directory", () => {
    const plain = buildQemuArgs(spec, "kvm", paths);
    expect(value(plain, "-machine")[0]).not.toContain("pcie");
    expect(value(plain, "-device").some((d) => d.startsWith("vfio-pci"))).toBe(false);
    const args = buildQemuArgs({ ...spec, runtimeDir: "/run/qvm/domains/sys,net", devices: [{ id: "pci0", kind: "pci", address: "0000:00:1f.6" }, { id: "pci1", kind: "pci", address: "0000:00:1f.3" }] }, "kvm", paths);
    expect(value(args, "-machine")[0]).toBe("microvm,memory-backend=mem,x-option-roms=off,isa-serial=on,rtc=on,pcie=on");
    expect(value(args, "-device").filter((d) => d.startsWith("vfio-pci"))).toEqual([
      "vfio-pci,id=pci0,sysfsdev=/run/qvm/domains/sys,,net/pci/0000:00:1f.6",
      "vfio-pci,id=pci1,sysfsdev=/run/qvm/domains/sys,,net/pci/0000:00:1f.3",
    ]);
    // The virtio devices stay on virtio-mmio; guest RAM stays one memfd (VFIO pins it).
    expect(value(args, "-device")).toContain("virtio-blk-device,drive=disk0,serial=root");
    expect(value(args, "-object")).toContain("memory-backend-memfd,id=mem,size=800M,share=on");
  });
});
