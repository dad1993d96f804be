// The QEMU command line for a domain. Pure: the same spec gives the same argv, so it is unit
// tested and printed by benchmarks next to the plain-QEMU baseline.
import type { Accel, VmSpec } from "../driver.js";

export interface QemuPaths {
  qmpSocket: string;
  consoleSocket: string;
  consoleLog: string;
  vhostUserSocket: string;
}

/**
 * Under TCG a microvm guest has no HPET or PM timer, and with two vCPUs the kernel's TSC
 * calibration against the PIT fails often enough that about one boot in three hangs right after
 * "tsc: Marking TSC unstable" (measured: 3 of 8 boots with -smp 2, 0 of 16 with -smp 1). So TCG
 * domains get one vCPU; with KVM the domain's vcpus property applies.
 */
export const TCG_VCPUS = 1;

/** Kernel arguments qvm always passes; the initramfs reads the qvm.* ones. */
export const BASE_KERNEL_ARGS = [
  "console=ttyS0",
  "reboot=t",
  "panic=-1",
  // No tsc=reliable / no_timer_check: under TCG they make about half of all boots hang before
  // the first console line (measured: 3 of 6 boots hung with them, 0 of 6 without).
  "i8042.noaux",
  "i8042.nomux",
  "i8042.nopnp",
  "i8042.dumbkbd",
  "quiet",
  "qvm.root=root",
  "qvm.modules=modules",
];

export function kernelCommandLine(spec: VmSpec): string {
  return [...BASE_KERNEL_ARGS, ...(spec.kernelArgs ?? [])].join(" ");
}

/** QEMU option values separate sub-options with commas; a literal comma is written twice. */
export function qemuEscape(value: string): string {
  return value.replaceAll(",", ",,");
}

export function buildQemuArgs(spec: VmSpec, accel: Accel, paths: QemuPaths): string[] {
  const mem = `${spec.memoryMiB}M`;
  const args = [
    "-name", `qvm-${spec.name},debug-threads=on`,
    "-machine", `microvm,accel=${accel},memory-backend=mem,x-option-roms=off,isa-serial=on,rtc=on`,
    "-cpu", accel === "kvm" ? "host" : "max",
    "-m", mem,
    "-smp", String(accel === "tcg" ? TCG_VCPUS : spec.vcpus),
    // vhost-user devices need guest RAM that the backend process can map.
    "-object", `memory-backend-memfd,id=mem,size=${mem},share=on`,
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-global", "virtio-mmio.force-legacy=false",
    "-kernel", qemuEscape(spec.kernel.vmlinuz),
    "-initrd", qemuEscape(spec.kernel.initrd),
    "-append", kernelCommandLine(spec),
    "-chardev", `socket,id=console,path=${qemuEscape(paths.consoleSocket)},server=on,wait=off,logfile=${qemuEscape(paths.consoleLog)},logappend=on`,
    "-serial", "chardev:console",
    "-chardev", `socket,id=vsock,path=${qemuEscape(paths.vhostUserSocket)}`,
    "-device", "vhost-user-vsock-device,chardev=vsock",
    "-qmp", `unix:${qemuEscape(paths.qmpSocket)},server=on,wait=off`,
  ];
  spec.disks.forEach((d, i) => {
    args.push(
      "-drive", `id=disk${i},file=${qemuEscape(d.path)},format=${d.format},if=none,readonly=${d.readonly ? "on" : "off"},cache=writeback,discard=unmap`,
      "-device", `virtio-blk-device,drive=disk${i},serial=${d.serial}`,
    );
  });
  return args;
}
