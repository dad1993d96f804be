// The QEMU command line for a domain. Pure: the same spec gives the same argv, so it is unit
// tested and printed by benchmarks next to the plain-QEMU baseline.
import { MAX_USB_PLUGS } from "@qvm/protocol/contracts";
import type { Accel, UsbDeviceSpec, VmSpec } from "../driver.js";
import { vfioStandIn } from "../pci/vfio.js";
import { balloonArgs } from "./balloon.js";

export interface QemuPaths {
  qmpSocket: string;
  /**
   * A second QMP monitor, used only to hand QEMU a descriptor (`add-fd` with SCM_RIGHTS, which
   * Node cannot send): qvm-qmp-add-fd connects, adds one and leaves, while qvmd keeps the first.
   */
  qmpFdSocket: string;
  consoleSocket: string;
  consoleLog: string;
  vhostUserSocket: string;
}

/** Kernel arguments qvm always passes; the initramfs reads the qvm.* ones. */
export const BASE_KERNEL_ARGS = [
  "console=ttyS0",
  "reboot=t",
  "panic=-1",
  "i8042.noaux",
  "i8042.nomux",
  "i8042.nopnp",
  "i8042.dumbkbd",
  "quiet",
  "qvm.root=root",
  "qvm.modules=modules",
];

/**
 * Under TCG a microvm guest has no HPET or PM timer, and calibrating the TSC against the PIT fails
 * often enough that about one boot in three hung right after "tsc: Marking TSC unstable"
 * (measured: 3 of 8 boots hung; 0 of 16 with tsc_early_khz). TCG's guest TSC runs at the host's
 * rate, so the host's frequency is passed in and calibration is skipped. `tsc=reliable` keeps it
 * the clocksource: otherwise the clocksource watchdog, seeing emulation's uneven pace, marks it
 * unstable and the guest falls back to refined-jiffies, which loses ticks under load (its clock
 * then ran seconds slow during a boot, and timestamps had 4 ms steps).
 */
export function kernelCommandLine(spec: VmSpec, tcgTscKhz?: number): string {
  const timing = tcgTscKhz ? [`tsc_early_khz=${tcgTscKhz}`, "tsc=reliable"] : [];
  return [...BASE_KERNEL_ARGS, ...timing, ...(spec.kernelArgs ?? [])].join(" ");
}

/** QEMU option values separate sub-options with commas; a literal comma is written twice. */
export function qemuEscape(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * QEMU's own seccomp filter with every deny option: no obsolete system calls, no privilege changes,
 * no fork/exec, no scheduler or resource changes.
 */
export const QEMU_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/** Where a VMM finds its tap devices: descriptors from 3 up (after stdio), one per tap nic in order. */
export const TAP_FD_BASE = 3;

/** The spec's tap nics, each with the descriptor QEMU is told to find it at (`-netdev tap,fd=`). */
export function tapFds(spec: VmSpec): { id: string; ifname: string; fd: number }[] {
  const taps = (spec.nics ?? []).flatMap((n) => (n.backend.kind === "tap" ? [{ id: n.id, ifname: n.backend.ifname }] : []));
  return taps.map((t, i) => ({ ...t, fd: TAP_FD_BASE + i }));
}

/**
 * `command` (the jailed VMM's, binary first) run through qvm-tap-open once per tap: each opens its
 * device as root, puts it at its descriptor and execs the next, so the VMM inherits them all and
 * keeps the pid.
 */
export function withTapFds(helper: string, taps: readonly { ifname: string; fd: number }[], command: string[]): string[] {
  return taps.reduceRight((cmd, t) => [helper, t.ifname, String(t.fd), "--", ...cmd], command);
}

// ---- emulated USB devices (`qvm usb plug`) ---------------------------------------------------
//
// The controller: QEMU's `microvm,usb=on` gives a platform xHCI that Debian's kernel has no driver
// for (it needs a device-tree/ACPI platform xhci-hcd binding); the PCI one (xhci_pci) is in every
// kernel, so a VM with USB devices boots microvm's PCIe root bus (pcie=on, as for VFIO) and gets
// `-device qemu-xhci` on it. It has as many ports as a domain may have devices (MAX_USB_PLUGS),
// each with a USB 2 and a USB 3 side (p2, p3: QEMU pairs them), so every device finds its port
// and the guest sees each at the same place: a keyboard or tablet on port N as bus id 1-N (the
// USB 2 root hub), a stick, which QEMU makes SuperSpeed, as 2-N (the USB 3 one).
//
// Who gets it: a VM whose spec has at least one USB device at start, and no other. The emulated
// xHCI is a large device model a guest can talk to, and pcie=on adds PCI enumeration to the boot:
// neither is given to domains that do not use USB. The price: a domain started without devices
// cannot take one until its next start (microvm has no PCI hot-plug to add the controller later).
//
// Sticks: the image is never named on the command line. qvmd opens it and the VMM inherits the
// descriptor (after the taps: usbDiskFds), declared with `-add-fd fd=N,set=M` and opened by QEMU
// as /dev/fdset/M, which dups the descriptor of the set whose access mode matches (O_RDONLY for a
// read-only stick, O_RDWR otherwise). A stick added later arrives the same way through the second
// monitor (qvm-qmp-add-fd), in a set numbered after those of the start.

/** The controller's QEMU id; its USB bus is `${USB_CONTROLLER_ID}.0`. */
export const USB_CONTROLLER_ID = "xhci";
export const USB_BUS = `${USB_CONTROLLER_ID}.0`;
/** The controller, on microvm's PCIe root bus: one port (USB 2 and USB 3 sides) per possible device. */
export const USB_CONTROLLER_DEVICE = `qemu-xhci,id=${USB_CONTROLLER_ID},p2=${MAX_USB_PLUGS},p3=${MAX_USB_PLUGS}`;

/** The spec's emulated USB devices, in order. */
export function usbDevices(spec: VmSpec): UsbDeviceSpec[] {
  return (spec.devices ?? []).filter((d): d is UsbDeviceSpec => d.kind === "usb");
}

/** Whether the VM gets a USB controller: when it has a USB device at start (see above). */
export function hasUsbController(spec: VmSpec): boolean {
  return usbDevices(spec).length > 0;
}

export interface UsbDiskFd {
  id: string;
  image: string;
  readonly: boolean;
  /** Where the VMM inherits the open image: after stdio and the taps. */
  fd: number;
  /** Its fd set (`-add-fd set=`, `/dev/fdset/N`): 1, 2, … in the order of the spec's sticks. */
  fdset: number;
}

/** The spec's USB sticks, each with its descriptor in the VMM and its fd set. */
export function usbDiskFds(spec: VmSpec): UsbDiskFd[] {
  const first = TAP_FD_BASE + tapFds(spec).length;
  return usbDevices(spec)
    .filter((d) => d.device === "disk")
    .map((d, i) => ({ id: d.id, image: d.image ?? "", readonly: d.readonly ?? false, fd: first + i, fdset: i + 1 }));
}

/**
 * Encrypted disks' keys (storage/volume-key.ts): each reaches QEMU as a descriptor after the taps
 * and sticks, an unlinked memory file QEMU reads once through /proc/self/fd at start
 * (`-object secret,file=`). No key is ever on the command line or on disk.
 */
export function diskKeyFds(spec: VmSpec): { index: number; secretId: string; fd: number }[] {
  const first = TAP_FD_BASE + tapFds(spec).length + usbDiskFds(spec).length;
  return spec.disks.flatMap((d, index) => (d.key ? [{ index, secretId: `disk${index}-key` }] : [])).map((k, i) => ({ ...k, fd: first + i }));
}

/** A stick's block node (QMP `blockdev-add` arguments): raw, over the fd set's descriptor. */
export function usbBlockdev(id: string, fdset: number, readonly: boolean): Record<string, unknown> {
  return { driver: "raw", "node-name": `${id}-img`, "read-only": readonly, file: { driver: "file", filename: `/dev/fdset/${fdset}` } };
}

/** A USB device (QMP `device_add` arguments) on the controller's bus; a stick uses its block node. */
export function usbDeviceProps(dev: UsbDeviceSpec): Record<string, unknown> {
  const at = { id: dev.id, bus: USB_BUS, port: dev.address };
  if (dev.device === "disk") return { driver: "usb-storage", ...at, drive: `${dev.id}-img`, removable: true };
  return { driver: dev.device === "keyboard" ? "usb-kbd" : "usb-tablet", ...at };
}

/**
 * QMP arguments as a command-line option value: nested objects as dotted keys, booleans as on/off,
 * commas escaped (`-blockdev driver=raw,file.filename=…`).
 */
export function optionString(props: Record<string, unknown>, prefix = ""): string {
  return Object.entries(props)
    .map(([k, v]) => {
      if (v !== null && typeof v === "object") return optionString(v as Record<string, unknown>, `${prefix}${k}.`);
      return `${prefix}${k}=${typeof v === "boolean" ? (v ? "on" : "off") : qemuEscape(String(v))}`;
    })
    .join(",");
}

/** `-device` value: the driver first, then its properties. */
function deviceOption(props: Record<string, unknown>): string {
  const { driver, ...rest } = props;
  return [String(driver), optionString(rest)].filter(Boolean).join(",");
}

/** `tbSizeMiB` bounds TCG's translation cache (ignored under KVM). */
export function buildQemuArgs(spec: VmSpec, accel: Accel, paths: QemuPaths, hostTscKhz?: number, tbSizeMiB?: number): string[] {
  const mem = `${spec.memoryMiB}M`;
  // Passed-through PCI devices and the USB controller need a PCI bus: microvm's PCIe root bus
  // (pcie=on; QEMU 7.2 has vfio-pci and qemu-xhci on it). The virtio devices stay on virtio-mmio.
  const pci = (spec.devices ?? []).filter((d) => d.kind === "pci");
  const usb = hasUsbController(spec);
  const args = [
    "-name", `qvm-${spec.name},debug-threads=on`,
    "-machine", `microvm,memory-backend=mem,x-option-roms=off,isa-serial=on,rtc=on${pci.length || usb ? ",pcie=on" : ""}`,
    "-accel", accel === "tcg" && tbSizeMiB ? `tcg,tb-size=${tbSizeMiB}` : accel,
    "-sandbox", QEMU_SANDBOX,
    "-cpu", accel === "kvm" ? "host" : "max",
    "-m", mem,
    "-smp", String(spec.vcpus),
    // vhost-user devices need guest RAM that the backend process can map.
    "-object", `memory-backend-memfd,id=mem,size=${mem},share=on`,
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-global", "virtio-mmio.force-legacy=false",
    "-kernel", qemuEscape(spec.kernel.image),
    "-initrd", qemuEscape(spec.kernel.initrd),
    "-append", kernelCommandLine(spec, accel === "tcg" ? hostTscKhz : undefined),
    "-chardev", `socket,id=console,path=${qemuEscape(paths.consoleSocket)},server=on,wait=off,logfile=${qemuEscape(paths.consoleLog)},logappend=on`,
    "-serial", "chardev:console",
    "-chardev", `socket,id=vsock,path=${qemuEscape(paths.vhostUserSocket)}`,
    "-device", "vhost-user-vsock-device,chardev=vsock",
    "-qmp", `unix:${qemuEscape(paths.qmpSocket)},server=on,wait=off`,
    "-qmp", `unix:${qemuEscape(paths.qmpFdSocket)},server=on,wait=off`,
  ];
  const fds = new Map(tapFds(spec).map((t) => [t.id, t.fd]));
  for (const nic of spec.nics ?? []) {
    const b = nic.backend;
    const netdev =
      b.kind === "dgram-unix"
        ? `dgram,id=${nic.id},local.type=unix,local.path=${qemuEscape(b.local)},remote.type=unix,remote.path=${qemuEscape(b.remote)}`
        : b.kind === "stream-unix"
          ? `stream,id=${nic.id},server=off,addr.type=unix,addr.path=${qemuEscape(b.path)}`
          : `tap,id=${nic.id},fd=${fds.get(nic.id)}`;
    args.push("-netdev", netdev, "-device", `virtio-net-device,netdev=${nic.id},mac=${nic.mac}`);
  }
  const keys = new Map(diskKeyFds(spec).map((k) => [k.index, k]));
  spec.disks.forEach((d, i) => {
    const key = keys.get(i);
    if (key) args.push("-object", `secret,id=${key.secretId},file=/proc/self/fd/${key.fd}`);
    args.push(
      "-drive", `id=disk${i},file=${qemuEscape(d.path)},format=${d.format},if=none,readonly=${d.readonly ? "on" : "off"},cache=writeback,discard=unmap${key ? `,encrypt.key-secret=${key.secretId}` : ""}`,
      "-device", `virtio-blk-device,drive=disk${i},serial=${d.serial}`,
    );
  });
  // Free memory goes back to the host (balloon.ts); after the other virtio devices, so they keep their slots.
  args.push(...balloonArgs());
  // sysfsdev, not host=BDF: QEMU finds the device's IOMMU group in its sysfs directory, which the
  // jail does not show; the stand-in holds only that link (vmm/pci/vfio.ts).
  for (const d of pci) args.push("-device", `vfio-pci,id=${d.id},sysfsdev=${qemuEscape(vfioStandIn(spec.runtimeDir, d.address))}`);
  if (usb) {
    args.push("-device", USB_CONTROLLER_DEVICE);
    const sticks = new Map(usbDiskFds(spec).map((s) => [s.id, s]));
    for (const dev of usbDevices(spec)) {
      const stick = sticks.get(dev.id);
      if (stick) args.push("-add-fd", `fd=${stick.fd},set=${stick.fdset}`, "-blockdev", optionString(usbBlockdev(dev.id, stick.fdset, stick.readonly)));
      args.push("-device", deviceOption(usbDeviceProps(dev)));
    }
  }
  return args;
}
