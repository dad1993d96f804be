// The QEMU command line for a domain. Pure: the same spec gives the same argv, so it is unit
// tested and printed by benchmarks next to the plain-QEMU baseline.
import type { Accel, VmSpec } from "../driver.js";
import { vfioStandIn } from "../pci/vfio.js";

export interface QemuPaths {
  qmpSocket: string;
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
 * rate, so the host's frequency is passed in and calibration is skipped.
 */
export function kernelCommandLine(spec: VmSpec, tcgTscKhz?: number): string {
  const timing = tcgTscKhz ? [`tsc_early_khz=${tcgTscKhz}`] : [];
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

/** `tbSizeMiB` bounds TCG's translation cache (ignored under KVM). */
export function buildQemuArgs(spec: VmSpec, accel: Accel, paths: QemuPaths, hostTscKhz?: number, tbSizeMiB?: number): string[] {
  const mem = `${spec.memoryMiB}M`;
  // Passed-through PCI devices need a PCI bus: microvm's PCIe root bus (pcie=on; QEMU 7.2 has
  // vfio-pci on it). The virtio devices stay on virtio-mmio.
  const pci = (spec.devices ?? []).filter((d) => d.kind === "pci");
  const args = [
    "-name", `qvm-${spec.name},debug-threads=on`,
    "-machine", `microvm,memory-backend=mem,x-option-roms=off,isa-serial=on,rtc=on${pci.length ? ",pcie=on" : ""}`,
    "-accel", accel === "tcg" && tbSizeMiB ? `tcg,tb-size=${tbSizeMiB}` : accel,
    "-sandbox", QEMU_SANDBOX,
    "-cpu", accel === "kvm" ? "host" : "max",
    "-m", mem,
    "-smp", String(spec.vcpus),
    // vhost-user devices need guest RAM that the backend process can map.
    "-object", `memory-backend-memfd,id=mem,size=${mem},share=on`,
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-global", "virtio-mmio.force-legacy=false",
    "-kernel", qemuEscape(spec.kernel.vmlinuz),
    "-initrd", qemuEscape(spec.kernel.initrd),
    "-append", kernelCommandLine(spec, accel === "tcg" ? hostTscKhz : undefined),
    "-chardev", `socket,id=console,path=${qemuEscape(paths.consoleSocket)},server=on,wait=off,logfile=${qemuEscape(paths.consoleLog)},logappend=on`,
    "-serial", "chardev:console",
    "-chardev", `socket,id=vsock,path=${qemuEscape(paths.vhostUserSocket)}`,
    "-device", "vhost-user-vsock-device,chardev=vsock",
    "-qmp", `unix:${qemuEscape(paths.qmpSocket)},server=on,wait=off`,
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
  spec.disks.forEach((d, i) => {
    args.push(
      "-drive", `id=disk${i},file=${qemuEscape(d.path)},format=${d.format},if=none,readonly=${d.readonly ? "on" : "off"},cache=writeback,discard=unmap`,
      "-device", `virtio-blk-device,drive=disk${i},serial=${d.serial}`,
    );
  });
  // sysfsdev, not host=BDF: QEMU finds the device's IOMMU group in its sysfs directory, which the
  // jail does not show; the stand-in holds only that link (vmm/pci/vfio.ts).
  for (const d of pci) args.push("-device", `vfio-pci,id=${d.id},sysfsdev=${qemuEscape(vfioStandIn(spec.runtimeDir, d.address))}`);
  return args;
}
