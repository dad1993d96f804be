// What starting a domain needs, decided before anything is made: the VMM driver (from the `vmm`
// property, through the driver table), the VM's kernel, resources and room for links, devices
// and channels, the disks to prepare, and the domains that must run first (its netvm). Each
// later capability adds its part here (a NIC from the network layer, a device from USB), so
// the runner itself never changes for them.
import { createHash } from "node:crypto";
import { existsSync, lstatSync, statSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import type { ImageStore, KernelBundle } from "@qvm/images";
import { usbPlugNumber, type DomainRecord, type UsbPlug } from "../model/domain.js";
import type { VolumeKey } from "../storage/volume-key.js";
import type { VolumeStore } from "../storage/volumes.js";
import type { ChannelSpec, DeviceSpec, DiskSpec, NicSpec, UsbDeviceSpec, VmmDriver, VmmKind, VmmUser } from "../vmm/driver.js";
import type { DriverTable } from "../vmm/drivers.js";
import type { PciHost } from "../vmm/pci/sysfs.js";
import type { DomainPaths } from "./paths.js";
import type { DomainRegistry } from "./registry.js";
import { vmmUserOf, type VmmUidRange } from "./vmm-users.js";

export interface BootPlan {
  name: string;
  vmm: VmmKind;
  driver: VmmDriver;
  /** Domains that must be running before this one starts, in start order. */
  dependencies: string[];
  kernel: KernelBundle;
  runtimeDir: string;
  logDir: string;
  memoryMiB: number;
  vcpus: number;
  kernelArgs: string[];
  agentTimeoutMs: number;
  nics: NicSpec[];
  /** Work right before the VMM starts (a link's user-mode stack); returns its undo. */
  beforeVmm?: () => Promise<() => void>;
  devices: DeviceSpec[];
  channels: ChannelSpec[];
  /** The unprivileged identity the VMM runs as; absent when qvmd cannot jail (not root). */
  user?: VmmUser;
  /**
   * Checks what the domain boots from against the image store's manifests (the kernel bundle, and
   * a template root still the store's own image); throws CORRUPT_STATE naming the file and fix.
   */
  checkIntegrity(): Promise<void>;
  /**
   * An encrypted domain's (encrypted=True, or a volume with a key file): its private volume's key
   * from the passphrase, checked against the volume (PERMISSION_DENIED when wrong).
   */
  unlock?: (passphrase: string) => Promise<VolumeKey>;
  /** Makes the disks (revisions, snapshots, overlays) right before the VM starts; root first. `key`: unlock's. */
  prepareDisks(key?: VolumeKey): Promise<DiskSpec[]>;
  /** How far the overlays prepareDisks makes may grow on the data disk, in bytes (for admission). */
  overlayBytes(): Promise<number>;
  /**
   * A disposable whose driver restores snapshots (cloud-hypervisor): it starts from a snapshot of
   * a booted domain of its template (dispvm-snapshots.ts), kept while `key` holds: the key changes
   * with the template's volumes, the kernel and the VM's shape.
   */
  fromSnapshot?: { template: string; key: string };
}

/**
 * The network layer's part of a plan: the domain's links, and what must run before its VMM.
 * Injected (the network layer sits above this one).
 */
export interface LinkPlanner {
  plan(rec: DomainRecord, runtimeDir: string, user: VmmUser | undefined): { nics: NicSpec[]; beforeVmm?: () => Promise<() => void> };
}

export interface BootPlannerDeps {
  registry: DomainRegistry;
  volumes: VolumeStore;
  images: ImageStore;
  drivers: DriverTable;
  paths: DomainPaths;
  isRunning(name: string): boolean;
  /** The uid range VMMs run in; undefined: VMMs run as qvmd's own user. */
  vmmUids?: VmmUidRange;
  /** Links; absent: domains have none (tests of the runner alone). */
  links?: LinkPlanner;
  /** The host's PCI devices; absent: a domain with PCI devices cannot start (tests of the runner alone). */
  pci?: PciHost;
  /** Checks image files before a boot (images' ImageIntegrity); absent: nothing is checked. */
  integrity?: BootIntegrity;
}

export interface BootIntegrity {
  checkKernel(bundle: KernelBundle): Promise<void>;
  checkTemplateRoot(root: string): Promise<void>;
}

export class BootPlanner {
  constructor(private readonly deps: BootPlannerDeps) {}

  /** The plan for `rec`; throws the precondition that stops it from starting, naming the fix. */
  plan(rec: DomainRecord): BootPlan {
    const { registry, volumes, paths } = this.deps;
    const name = rec.name;
    const sources = this.templateVolumesOf(rec);
    const kernel = this.kernelOf(rec);
    const vmm = String(registry.resolve(rec, "vmm"));
    const int = (p: string) => Number(registry.resolve(rec, p));
    const netvm = String(registry.resolve(rec, "netvm"));
    const runtimeDir = paths.runtimeDirOf(name);
    const user = this.deps.vmmUids ? vmmUserOf(registry, name, this.deps.vmmUids) : undefined;
    const links = this.deps.links?.plan(rec, runtimeDir, user) ?? { nics: [] };
    const devices = [...this.pciDevicesOf(rec, user), ...usbDevicesOf(rec)];
    return {
      name,
      vmm,
      driver: this.deps.drivers.get(vmm),
      dependencies: netvm ? [netvm] : [],
      kernel,
      runtimeDir,
      logDir: paths.logDirOf(name),
      memoryMiB: int("memory"),
      vcpus: int("vcpus"),
      kernelArgs: String(registry.resolve(rec, "kernelopts")).split(/\s+/).filter(Boolean),
      agentTimeoutMs: int("qrexec_timeout") * 1000,
      nics: links.nics,
      beforeVmm: links.beforeVmm,
      devices,
      channels: [],
      user,
      checkIntegrity: async () => {
        if (!this.deps.integrity) return;
        await this.deps.integrity.checkKernel(kernel);
        const ownRoot = rec.class === "TemplateVM" || rec.class === "StandaloneVM" ? volumes.files(name).root : undefined;
        const root = sources.templateRoot ?? ownRoot;
        if (root) await this.deps.integrity.checkTemplateRoot(root);
      },
      ...(volumes.needsPassphrase(rec) ? { unlock: (passphrase: string) => volumes.unlock(name, passphrase) } : {}),
      prepareDisks: (key?: VolumeKey) => volumes.prepareStart(name, rec.class, { ...sources, revisionsToKeep: registry.revisionsToKeep(rec, "private"), ...(key ? { key } : {}) }),
      overlayBytes: () => volumes.plannedGrowth(name, rec.class, sources),
      ...this.snapshotSourceOf(rec, vmm, kernel, sources, { user, nics: links.nics, devices, memoryMiB: int("memory"), vcpus: int("vcpus"), kernelopts: String(registry.resolve(rec, "kernelopts")) }),
    };
  }

  /**
   * Disposables start from a snapshot when their driver restores them and they have nothing a
   * snapshot cannot carry: links and devices are made per domain, and a restore needs the jail.
   */
  private snapshotSourceOf(
    rec: DomainRecord,
    vmm: string,
    kernel: KernelBundle,
    sources: { templateRoot?: string; templatePrivate?: string },
    shape: { user?: VmmUser; nics: NicSpec[]; devices: DeviceSpec[]; memoryMiB: number; vcpus: number; kernelopts: string },
  ): Pick<BootPlan, "fromSnapshot"> {
    if (rec.class !== "DispVM" || !this.deps.drivers.get(vmm).restore || !shape.user || shape.nics.length || shape.devices.length) return {};
    const files = [kernel.image, kernel.initrd, kernel.modules, sources.templateRoot, sources.templatePrivate].map((f) => {
      if (!f || !existsSync(f)) return "-";
      const st = statSync(f);
      return `${f}:${st.ino}:${st.size}:${st.mtimeMs}`;
    });
    const key = createHash("sha256")
      .update(JSON.stringify([vmm, shape.memoryMiB, shape.vcpus, shape.kernelopts, files]))
      .digest("hex")
      .slice(0, 24);
    return { fromSnapshot: { template: String(rec.props.template), key } };
  }

  /**
   * The domain's PCI devices (`qvm pci`), each checked against the host now, so that a start
   * fails before its netvm starts: the device is there, the host has an IOMMU, the device's
   * group is viable, and no other domain's VMM still holds it (a running domain it was detached
   * from). The driver binds them to vfio-pci right before the VMM starts.
   */
  private pciDevicesOf(rec: DomainRecord, user: VmmUser | undefined): DeviceSpec[] {
    const bdfs = (rec.pci ?? []).map((d) => d.bdf);
    if (!bdfs.length) return [];
    const { pci, registry } = this.deps;
    if (!pci) throw new QvmError("FAILED_PRECONDITION", `${rec.name} has PCI devices, and this qvmd cannot pass devices through`);
    return bdfs.map((bdf, i): DeviceSpec => {
      let group: number;
      try {
        group = pci.checkAssignable(bdf, rec.name, (other) => registry.pciOwner(other)).iommuGroup;
      } catch (err) {
        if (err instanceof QvmError) throw new QvmError(err.code, `${rec.name} cannot start with its PCI device ${bdf}: ${err.message}; or detach it (\`qvm pci detach ${rec.name} ${bdf}\`)`);
        throw err;
      }
      const holder = pci.groupHolder(group);
      if (holder !== undefined && holder !== user?.uid) {
        const other = registry.list().find((r) => r.vmmUid === holder)?.name;
        throw new QvmError(
          "FAILED_PRECONDITION",
          `${rec.name} cannot start: its PCI device ${bdf} is still held by ${other ? `${other}, which runs (the device was detached from it)` : `a VMM running as uid ${holder}`}; it goes back to the host when that domain stops`,
        );
      }
      return { id: `pci${i}`, kind: "pci", address: bdf };
    });
  }

  /**
   * What a domain's snapshots are taken from: an AppVM's template's root; a disposable's
   * template's private and that template's own template's root. A disposable's template must be
   * halted: its private is read, so it must not change underneath.
   */
  private templateVolumesOf(rec: DomainRecord): { templateRoot?: string; templatePrivate?: string } {
    if (rec.class === "AppVM") return { templateRoot: this.templateRootOf(rec, true) };
    if (rec.class !== "DispVM") return {};
    const dvm = this.deps.registry.get(String(rec.props.template));
    if (this.deps.isRunning(dvm.name)) throw new QvmError("FAILED_PRECONDITION", `${dvm.name} is running: its disposables can start once it is shut down`);
    return { templateRoot: this.templateRootOf(dvm, true), templatePrivate: this.deps.volumes.files(dvm.name).private };
  }

  /** The committed root of an AppVM's template: what its root snapshot is taken from. */
  templateRootOf(rec: DomainRecord, mustExist = false): string {
    const template = String(this.deps.registry.resolve(rec, "template"));
    if (!template) throw new QvmError("FAILED_PRECONDITION", `${rec.name} has no template; set one with \`qvm prefs ${rec.name} template NAME\``);
    this.deps.registry.get(template);
    const root = this.deps.volumes.files(template).root;
    if (mustExist && !existsSync(root)) {
      throw new QvmError("MISSING_DEPENDENCY", `template ${template} has no root volume (${root} is missing): rebuild it with \`qvm template build ${template}\` after \`qvm template remove ${template}\``);
    }
    return root;
  }

  private kernelOf(rec: DomainRecord): KernelBundle {
    const ref = String(this.deps.registry.resolve(rec, "kernel"));
    if (ref === "") throw new QvmError("FAILED_PRECONDITION", `${rec.name}: booting the domain's own kernel (kernel "") is not supported yet; reset it with \`qvm prefs -D ${rec.name} kernel\``);
    if (ref !== "current") throw new QvmError("NOT_FOUND", `kernel bundle "${ref}" is not available; only "current" (the one \`qvm-images build\` made) is`);
    return this.deps.images.kernel();
  }
}

/**
 * The domain's emulated USB devices (`qvm usb plug`). A domain that has any starts with the USB
 * controller (vmm/qemu/qemu-args.ts says why only those). A stick's image is checked now, so that
 * a start fails before its netvm starts; the driver opens it right before the VMM starts and
 * hands it over as a descriptor.
 */
export function usbDevicesOf(rec: DomainRecord): DeviceSpec[] {
  return (rec.usbPlugs ?? []).map((p): DeviceSpec => {
    if (p.kind === "disk") {
      const unplug = `\`qvm usb unplug ${rec.name} ${p.id}\``;
      let st;
      try {
        st = lstatSync(p.path);
      } catch {
        throw new QvmError("FAILED_PRECONDITION", `${rec.name} cannot start: the image of its USB stick ${p.id}, ${p.path}, does not exist; put it back or unplug it (${unplug})`);
      }
      if (!st.isFile()) {
        throw new QvmError("FAILED_PRECONDITION", `${rec.name} cannot start: the image of its USB stick ${p.id}, ${p.path}, is ${st.isSymbolicLink() ? "a symbolic link now" : "not a regular file"}; unplug it (${unplug})`);
      }
    }
    return usbDeviceSpecOf(p);
  });
}

/** The device the VMM gets for a plug, on the controller port of its number (usb3: port 3), so the guest finds it at the same place every time. */
export function usbDeviceSpecOf(plug: UsbPlug): UsbDeviceSpec {
  const address = String(usbPlugNumber(plug.id));
  if (plug.kind === "disk") return { id: plug.id, kind: "usb", address, device: "disk", image: plug.path, readonly: plug.readOnly };
  return { id: plug.id, kind: "usb", address, device: plug.kind };
}
