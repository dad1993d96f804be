import { describe, expect, it } from "vitest";
import { buildQemuArgs, diskKeyFds, hasUsbController, kernelCommandLine, optionString, qemuEscape, usbBlockdev, usbDeviceProps, usbDiskFds } from "./qemu-args.js";
import type { DeviceSpec, VmSpec } from "../driver.js";

const spec: VmSpec = {
  name: "work",
  runtimeDir: "/run/qvm/domains/work",
  logDir: "/var/lib/qvm/logs/work",
  kernel: { image: "/k/vmlinuz", initrd: "/k/initrd.img" },
  disks: [
    { serial: "root", path: "/run/qvm/domains/work/root.qcow2", format: "qcow2", readonly: false },
    { serial: "modules", path: "/k/modules,1.img", format: "raw", readonly: true },
  ],
  memoryMiB: 800,
  vcpus: 2,
  guestCid: 3,
};
const paths = { qmpSocket: "/r/qmp.sock", qmpFdSocket: "/r/qmp-fd.sock", consoleSocket: "/r/console.sock", consoleLog: "/l/console.log", vhostUserSocket: "/r/vu.sock" };
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

  it("gives every domain a balloon that reports free pages, after its other virtio devices (they keep their slots)", () => {
    const args = buildQemuArgs({ ...spec, nics: [{ id: "eth0", mac: "fe:ff:ff:ff:00:01", backend: { kind: "stream-unix", path: "/r/n.sock" } }] }, "tcg", paths);
    const devices = value(args, "-device");
    const virtio = devices.filter((d) => /^(virtio|vhost-user)-/.test(d));
    expect(virtio.at(-1)).toBe("virtio-balloon-device,id=balloon,free-page-reporting=on,deflate-on-oom=on");
    expect(virtio.filter((d) => d.startsWith("virtio-balloon"))).toHaveLength(1);
  });

  it("gives every domain a second QMP monitor, for handing QEMU descriptors", () => {
    expect(value(buildQemuArgs(spec, "kvm", paths), "-qmp")).toEqual(["unix:/r/qmp.sock,server=on,wait=off", "unix:/r/qmp-fd.sock,server=on,wait=off"]);
  });
});

describe("emulated USB devices on the QEMU command line", () => {
  const stick = (id: string, port: string, image: string, readonly = false): DeviceSpec => ({ id, kind: "usb", address: port, device: "disk", image, readonly });
  const usb: DeviceSpec[] = [
    stick("usb1", "1", "/home/u/stick,1.img"),
    { id: "usb2", kind: "usb", address: "2", device: "keyboard" },
    { id: "usb3", kind: "usb", address: "3", device: "tablet" },
    stick("usb5", "5", "/srv/ro.img", true),
  ];
  const taps: VmSpec["nics"] = [
    { id: "vif0", mac: "fe:ff:ff:ff:00:00", backend: { kind: "tap", ifname: "qvm-a" } },
    { id: "eth0", mac: "00:16:3e:5e:6c:00", backend: { kind: "stream-unix", path: "/r/passt.sock" } },
    { id: "vif1", mac: "fe:ff:ff:ff:00:01", backend: { kind: "tap", ifname: "qvm-b" } },
  ];

  it("gives no controller, and no PCIe bus, to a domain without USB devices", () => {
    const args = buildQemuArgs(spec, "kvm", paths);
    expect(hasUsbController(spec)).toBe(false);
    expect(value(args, "-machine")[0]).not.toContain("pcie=on");
    expect(args.some((a) => /xhci|usb|fdset/.test(a))).toBe(false);
    expect(args).not.toContain("-add-fd");
  });

  it("gives the xHCI controller on microvm's PCIe bus, one port per possible device, then each device on its port", () => {
    const args = buildQemuArgs({ ...spec, devices: usb }, "kvm", paths);
    expect(value(args, "-machine")[0]).toBe("microvm,memory-backend=mem,x-option-roms=off,isa-serial=on,rtc=on,pcie=on");
    const devices = value(args, "-device");
    const at = devices.indexOf("qemu-xhci,id=xhci,p2=8,p3=8");
    expect(at).toBeGreaterThan(0);
    expect(devices.slice(at + 1)).toEqual([
      "usb-storage,id=usb1,bus=xhci.0,port=1,drive=usb1-img,removable=on",
      "usb-kbd,id=usb2,bus=xhci.0,port=2",
      "usb-tablet,id=usb3,bus=xhci.0,port=3",
      "usb-storage,id=usb5,bus=xhci.0,port=5,drive=usb5-img,removable=on",
    ]);
    // One controller, whatever the number of devices; keyboards and tablets alone get it too.
    const kbd = buildQemuArgs({ ...spec, devices: [usb[1]!] }, "kvm", paths);
    expect(value(kbd, "-device").filter((d) => d.startsWith("qemu-xhci"))).toHaveLength(1);
    expect(value(kbd, "-machine")[0]).toContain("pcie=on");
    expect(kbd).not.toContain("-add-fd");
  });

  it("never names a stick's image: QEMU opens /dev/fdset/N, a set holding the descriptor it inherits after stdio", () => {
    const args = buildQemuArgs({ ...spec, devices: usb }, "kvm", paths);
    expect(args.some((a) => a.includes("stick") || a.includes("/srv/ro.img"))).toBe(false);
    expect(value(args, "-add-fd")).toEqual(["fd=3,set=1", "fd=4,set=2"]);
    expect(value(args, "-blockdev")).toEqual([
      "driver=raw,node-name=usb1-img,read-only=off,file.driver=file,file.filename=/dev/fdset/1",
      "driver=raw,node-name=usb5-img,read-only=on,file.driver=file,file.filename=/dev/fdset/2",
    ]);
  });

  it("numbers the sticks' descriptors after the taps' (which qvm-tap-open places from 3)", () => {
    const withTaps: VmSpec = { ...spec, nics: taps, devices: usb };
    expect(usbDiskFds(withTaps)).toEqual([
      { id: "usb1", image: "/home/u/stick,1.img", readonly: false, fd: 5, fdset: 1 },
      { id: "usb5", image: "/srv/ro.img", readonly: true, fd: 6, fdset: 2 },
    ]);
    const args = buildQemuArgs(withTaps, "kvm", paths);
    expect(value(args, "-netdev").filter((n) => n.startsWith("tap"))).toEqual(["tap,id=vif0,fd=3", "tap,id=vif1,fd=4"]);
    expect(value(args, "-add-fd")).toEqual(["fd=5,set=1", "fd=6,set=2"]);
  });

  it("gives encrypted disks their keys as secrets read from inherited descriptors after the taps and sticks, never inline", () => {
    const key = { base64: () => Buffer.from("c2VjcmV0"), wipe: () => {} };
    const keyed: VmSpec = { ...spec, nics: taps, devices: usb, disks: [{ ...spec.disks[0]!, key }, spec.disks[1]!, { serial: "private", path: "/d/private.qcow2", format: "qcow2", readonly: false, key }] };
    expect(diskKeyFds(keyed)).toEqual([
      { index: 0, secretId: "disk0-key", fd: 7 },
      { index: 2, secretId: "disk2-key", fd: 8 },
    ]);
    const args = buildQemuArgs(keyed, "kvm", paths);
    expect(value(args, "-object").filter((o) => o.startsWith("secret"))).toEqual(["secret,id=disk0-key,file=/proc/self/fd/7", "secret,id=disk2-key,file=/proc/self/fd/8"]);
    const drives = value(args, "-drive");
    expect(drives[0]).toMatch(/,encrypt\.key-secret=disk0-key$/);
    expect(drives[1]).not.toMatch(/key-secret/);
    expect(drives[2]).toMatch(/,encrypt\.key-secret=disk2-key$/);
    expect(args.join(" ")).not.toContain("c2VjcmV0");
  });

  it("writes a read-only stick's node read-only (QEMU then dups the set's O_RDONLY descriptor)", () => {
    expect(usbBlockdev("usb5", 2, true)).toEqual({ driver: "raw", "node-name": "usb5-img", "read-only": true, file: { driver: "file", filename: "/dev/fdset/2" } });
    expect(usbBlockdev("usb1", 7, false)["read-only"]).toBe(false);
  });

  it("uses the same properties on the command line as in QMP device_add (hot-plug)", () => {
    expect(usbDeviceProps(usb[0] as never)).toEqual({ driver: "usb-storage", id: "usb1", bus: "xhci.0", port: "1", drive: "usb1-img", removable: true });
    expect(usbDeviceProps(usb[2] as never)).toEqual({ driver: "usb-tablet", id: "usb3", bus: "xhci.0", port: "3" });
    expect(optionString({ a: "x,y", b: true, c: { d: false, e: 3 } })).toBe("a=x,,y,b=on,c.d=off,c.e=3");
  });

  it("puts PCI devices and the USB controller on the same PCIe bus", () => {
    const args = buildQemuArgs({ ...spec, devices: [{ id: "pci0", kind: "pci", address: "0000:00:1f.6" }, usb[1]!] }, "kvm", paths);
    expect(value(args, "-machine")[0]!.match(/pcie=on/g)).toHaveLength(1);
    expect(value(args, "-device").filter((d) => /^(vfio-pci|qemu-xhci|usb-kbd)/.test(d))).toHaveLength(3);
  });
});
