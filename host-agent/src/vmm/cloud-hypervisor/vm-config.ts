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
// - a balloon that reports free pages, as QEMU domains have (balloon.ts);
// - landlock on, with the runtime directory writable (CH dials `<vsock>_<port>` there) on top of
//   the rules CH derives from the config itself.
// Every path is the one CH sees (view.ts): fixed ones when jailed, so snapshots restore anywhere.
// Network links: tap devices by name (CH opens a persistent tap its uid owns; it takes no
// descriptors in vm.create). QEMU's datagram-socket links, passt's stream links, VFIO and
// emulated USB have no CH form here: a spec with any is refused with an error that says so.
import { QvmError } from "@qvm/protocol";
import type { NicSpec, VmSpec } from "../driver.js";
import { kernelCommandLine } from "../qemu/qemu-args.js";
import { chFiles, type ChView } from "./view.js";

const MIB = 1024 * 1024;

export interface ChNetConfig {
  id: string;
  tap: string;
  mac: string;
}

export interface ChVmConfig {
  payload: { kernel: string; initramfs: string; cmdline: string };
  cpus: { boot_vcpus: number; max_vcpus: number };
  memory: { size: number; shared: boolean };
  disks: Array<{ id: string; path: string; readonly: boolean; serial: string; image_type: "Raw" | "Qcow2"; backing_files?: boolean }>;
  vsock: { cid: number; socket: string };
  serial: { mode: "Socket"; socket: string };
  console: { mode: "Off" };
  rng: { src: string };
  balloon: { size: number; deflate_on_oom: boolean; free_page_reporting: boolean };
  net?: ChNetConfig[];
  landlock_enable: boolean;
  landlock_rules: Array<{ path: string; access: "r" | "rw" }>;
}

/** A link as CH's NetConfig (vm.create's `net`, or vm.add-net's body); refuses what CH cannot carry. */
export function netConfig(domain: string, nic: NicSpec): ChNetConfig {
  if (nic.backend.kind !== "tap") {
    throw new QvmError(
      "FAILED_PRECONDITION",
      `${domain}: its link ${nic.id} is a ${nic.backend.kind} socket, which the cloud-hypervisor driver cannot carry (CH takes tap devices); use \`qvm prefs ${domain} vmm qemu\`, or give it a tap uplink`,
    );
  }
  return { id: nic.id, tap: nic.backend.ifname, mac: nic.mac };
}

export function buildVmConfig(spec: VmSpec, view: ChView): ChVmConfig {
  if (spec.devices?.length) throw new QvmError("FAILED_PRECONDITION", `${spec.name}: PCI and USB devices are not supported by the cloud-hypervisor driver yet; use \`qvm prefs ${spec.name} vmm qemu\``);
  if (spec.channels?.length) throw new QvmError("FAILED_PRECONDITION", `${spec.name}: extra channels are not supported by the cloud-hypervisor driver yet`);
  // cloud-hypervisor's qcow2 reader has no encryption: an encrypted domain runs under QEMU.
  if (spec.disks.some((d) => d.key)) throw new QvmError("FAILED_PRECONDITION", `${spec.name} is encrypted, and cloud-hypervisor cannot open encrypted volumes; use \`qvm prefs ${spec.name} vmm qemu\``);
  const files = chFiles(view);
  const nics = (spec.nics ?? []).map((n) => netConfig(spec.name, n));
  return {
    payload: { kernel: view.kernel, initramfs: view.initrd, cmdline: kernelCommandLine(spec) },
    cpus: { boot_vcpus: spec.vcpus, max_vcpus: spec.vcpus },
    memory: { size: spec.memoryMiB * MIB, shared: true },
    // CH opens a qcow2 overlay's backing file only when told to (it is off by default: a guest-
    // written header could otherwise name any host file); qvm's overlays have trusted ones.
    disks: spec.disks.map((d, i) => ({
      id: `disk${i}`,
      path: view.disks[i]!,
      readonly: d.readonly,
      serial: d.serial,
      image_type: d.format === "qcow2" ? "Qcow2" : "Raw",
      ...(d.backingFiles?.length ? { backing_files: true } : {}),
    })),
    vsock: { cid: spec.guestCid, socket: files.vsockSocket },
    serial: { mode: "Socket", socket: files.consoleSocket },
    console: { mode: "Off" },
    rng: { src: "/dev/urandom" },
    balloon: { size: 0, deflate_on_oom: true, free_page_reporting: true },
    ...(nics.length ? { net: nics } : {}),
    landlock_enable: true,
    landlock_rules: [
      { path: view.runtimeDir, access: "rw" },
      ...(view.snapshot ? [{ path: view.snapshot, access: "rw" as const }] : []),
      ...[...new Set([...backingFiles(spec), ...(spec.readPaths ?? [])])].map((b) => ({ path: b, access: "r" as const })),
    ],
  };
}

/** Every backing file of the spec's overlays, once (they keep their host paths in every view). */
function backingFiles(spec: VmSpec): string[] {
  return [...new Set(spec.disks.flatMap((d) => d.backingFiles ?? []))];
}
