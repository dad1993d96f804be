// The body of cloud-hypervisor's `PUT /api/v1/vm.create` (its OpenAPI `VmConfig`) for a domain:
// the first piece of the cloud-hypervisor driver (issue 17). Contract-tested against CH's own
// API description (vm-config.test.ts); not yet run against a real cloud-hypervisor binary, which
// these machines cannot run (no Debian package, KVM only for PVM guests).
//
// What maps how:
// - payload: the kernel bundle's `image` (the PVH vmlinux, which CH boots without firmware), its
//   initramfs and the same command line as QEMU domains (kernelCommandLine);
// - memory: `shared` so vhost-user devices can map it, as QEMU's memfd backend is shared;
// - disks: CH has no virtio-blk serial in its API before `serial`; the initramfs finds volumes
//   by serial, so each disk's serial is set (and its id, for hot-unplug and resize);
// - vsock: CH's own hybrid vsock on the path QEMU domains give vhost-device-vsock, so the agent
//   relay, the qrexec listener (`_50`) and the Exec data channel (`_51`) are the same;
// - serial console to a Unix socket (like QEMU's chardev), virtio console off;
// - a balloon that reports free pages, as QEMU domains have (balloon.ts).
// Network links and devices (QEMU's datagram sockets, VFIO, emulated USB) have no CH form here
// yet: a spec with any is refused with an error that says so.
import { QvmError } from "@qvm/protocol";
import type { VmSpec } from "../driver.js";
import { kernelCommandLine } from "../qemu/qemu-args.js";

const MIB = 1024 * 1024;

/** Where the VMM's sockets live for a domain (made by the driver, under its runtime directory). */
export interface ChPaths {
  /** The hybrid vsock socket: "CONNECT <port>" for guest ports, "<path>_<port>" for the host's. */
  vsockSocket: string;
  /** The serial console. */
  consoleSocket: string;
}

export interface ChVmConfig {
  payload: { kernel: string; initramfs: string; cmdline: string };
  cpus: { boot_vcpus: number; max_vcpus: number };
  memory: { size: number; shared: boolean };
  disks: Array<{ id: string; path: string; readonly: boolean; serial: string; image_type: "Raw" | "Qcow2" }>;
  vsock: { cid: number; socket: string };
  serial: { mode: "Socket"; socket: string };
  console: { mode: "Off" };
  rng: { src: string };
  balloon: { size: number; deflate_on_oom: boolean; free_page_reporting: boolean };
}

export function buildVmConfig(spec: VmSpec, paths: ChPaths): ChVmConfig {
  if (spec.nics?.length) throw new QvmError("FAILED_PRECONDITION", `${spec.name}: network links are not supported by the cloud-hypervisor driver yet; set \`qvm prefs ${spec.name} netvm ""\` or use the QEMU backend`);
  if (spec.devices?.length) throw new QvmError("FAILED_PRECONDITION", `${spec.name}: PCI and USB devices are not supported by the cloud-hypervisor driver yet; use the QEMU backend`);
  return {
    payload: { kernel: spec.kernel.image, initramfs: spec.kernel.initrd, cmdline: kernelCommandLine(spec) },
    cpus: { boot_vcpus: spec.vcpus, max_vcpus: spec.vcpus },
    memory: { size: spec.memoryMiB * MIB, shared: true },
    disks: spec.disks.map((d, i) => ({ id: `disk${i}`, path: d.path, readonly: d.readonly, serial: d.serial, image_type: d.format === "qcow2" ? "Qcow2" : "Raw" })),
    vsock: { cid: spec.guestCid, socket: paths.vsockSocket },
    serial: { mode: "Socket", socket: paths.consoleSocket },
    console: { mode: "Off" },
    rng: { src: "/dev/urandom" },
    balloon: { size: 0, deflate_on_oom: true, free_page_reporting: true },
  };
}
