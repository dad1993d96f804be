// The host's PCI devices as sysfs shows them (/sys/bus/pci/devices, /sys/kernel/iommu_groups),
// and whether one can be passed to a domain with VFIO. Everything is read below one root ("/" on
// a host; a fake tree in tests) and every write goes through one function, so listing,
// viability and the binding steps (vfio.ts) are unit-tested without hardware.
//
// Passing a device through is only safe with an IOMMU: the device does DMA, and only the IOMMU
// confines it to the guest's memory. The IOMMU isolates groups, not devices: every device of a
// group can reach the others, so a group goes to one domain, and no device of it may stay with a
// host driver.
import { chownSync, existsSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { isPciAddress } from "@qvm/protocol/contracts";
import { pciNames } from "./pci-ids.js";

/** The driver VFIO passthrough binds a device to. */
export const VFIO_DRIVER = "vfio-pci";

export interface PciHostOptions {
  /** Where the host's /sys, /dev and /usr/share are; default $QVM_SYSFS_ROOT (tests: a fake tree), else "/". */
  root?: string;
  /**
   * How a sysfs attribute is written; default: a plain write, off the event loop (a write to
   * unbind or drivers_probe runs a driver's remove or probe, which may take seconds). Tests: a
   * fake kernel.
   */
  write?: (file: string, value: string) => Promise<void> | void;
  /** How a device node changes owner; default chown(2). */
  chown?: (file: string, uid: number, gid: number) => void;
}

export interface PciDeviceInfo {
  /** Canonical BDF, "0000:00:19.0". */
  bdf: string;
  /** Class, subclass and programming interface: 0x020000 is an Ethernet controller. */
  classCode: number;
  className: string;
  /** Four lowercase hex digits each. */
  vendorId: string;
  deviceId: string;
  /** From the pci.ids database; "" when it is not installed or does not know the id. */
  vendorName: string;
  deviceName: string;
  /** The driver bound now; "" for none. */
  driver: string;
  /** The IOMMU group; -1 without an IOMMU. */
  iommuGroup: number;
}

/** Drivers that leave a group viable for VFIO: the vfio drivers, and ones that do no DMA (the kernel's own list). */
const GROUP_SAFE_DRIVERS = new Set([VFIO_DRIVER, "pci-stub", "pcieport"]);

/** Class codes of bridges: the kernel lets a bridge stay with its driver in a group given to a guest. */
function isBridge(classCode: number): boolean {
  const ccss = classCode >> 8;
  return ccss === 0x0604 || ccss === 0x0609;
}

export const NO_IOMMU_HINT =
  "turn on VT-d (Intel) or AMD-Vi (AMD) in the firmware and boot the host with intel_iommu=on (Intel) or amd_iommu=on (AMD) on the kernel command line";

export class PciHost {
  readonly root: string;
  private readonly writeFile: (file: string, value: string) => Promise<void> | void;
  private readonly chownFile: (file: string, uid: number, gid: number) => void;

  constructor(opts: PciHostOptions = {}) {
    this.root = opts.root || process.env.QVM_SYSFS_ROOT || "/";
    this.writeFile = opts.write ?? ((file, value) => writeFile(file, value));
    this.chownFile = opts.chown ?? chownSync;
  }

  /** A path below the root: sys("bus/pci/devices") is /sys/bus/pci/devices on a host. */
  sys(...parts: string[]): string {
    return path.join(this.root, "sys", ...parts);
  }

  /** A device's sysfs directory (the bus's link to it). */
  deviceDir(bdf: string): string {
    return this.sys("bus/pci/devices", bdf);
  }

  /** The device node of a VFIO group, /dev/vfio/N. */
  groupNode(group: number): string {
    return path.join(this.root, "dev/vfio", String(group));
  }

  /** VFIO's container node, /dev/vfio/vfio (mode 0666: opening it grants nothing by itself). */
  containerNode(): string {
    return path.join(this.root, "dev/vfio/vfio");
  }

  async write(file: string, value: string): Promise<void> {
    await this.writeFile(file, value);
  }

  chown(file: string, uid: number, gid: number): void {
    this.chownFile(file, uid, gid);
  }

  /** True when the kernel made IOMMU groups: an IOMMU is on. */
  iommuEnabled(): boolean {
    return this.iommuGroups().length > 0;
  }

  private iommuGroups(): string[] {
    try {
      return readdirSync(this.sys("kernel/iommu_groups"));
    } catch {
      return [];
    }
  }

  /** Every PCI device of the host, by BDF. */
  list(): PciDeviceInfo[] {
    let names: string[];
    try {
      names = readdirSync(this.sys("bus/pci/devices"));
    } catch {
      return [];
    }
    return names
      .filter(isPciAddress)
      .sort()
      .flatMap((bdf) => {
        const d = this.device(bdf);
        return d ? [d] : [];
      });
  }

  /** One device; undefined when the host has none at `bdf`. */
  device(bdf: string): PciDeviceInfo | undefined {
    if (!isPciAddress(bdf) || !existsSync(this.deviceDir(bdf))) return undefined;
    const classCode = Number.parseInt(this.attribute(bdf, "class"), 16) || 0;
    const vendorId = hexId(this.attribute(bdf, "vendor"));
    const deviceId = hexId(this.attribute(bdf, "device"));
    return { bdf, classCode, vendorId, deviceId, ...pciNames(this.root, classCode, vendorId, deviceId), driver: this.driverOf(bdf), iommuGroup: this.groupOf(bdf) };
  }

  private attribute(bdf: string, name: string): string {
    try {
      return readFileSync(path.join(this.deviceDir(bdf), name), "utf8").trim();
    } catch {
      return "";
    }
  }

  /** The driver bound to the device now; "" for none. */
  driverOf(bdf: string): string {
    return linkName(path.join(this.deviceDir(bdf), "driver"));
  }

  /** The driver_override the device has; "" for none (sysfs shows "(null)"). */
  overrideOf(bdf: string): string {
    const v = this.attribute(bdf, "driver_override");
    return /^[A-Za-z0-9_.-]{1,64}$/.test(v) && v !== "(null)" ? v : "";
  }

  /** The device's IOMMU group; -1 when it has none (no IOMMU). */
  groupOf(bdf: string): number {
    const n = linkName(path.join(this.deviceDir(bdf), "iommu_group"));
    return /^\d+$/.test(n) ? Number(n) : -1;
  }

  /** The devices of a group, by BDF. */
  groupMembers(group: number): string[] {
    try {
      return readdirSync(this.sys("kernel/iommu_groups", String(group), "devices")).filter(isPciAddress).sort();
    } catch {
      return [];
    }
  }

  /** True for a group VFIO's no-IOMMU mode made up: nothing confines its devices' DMA. */
  isNoIommuGroup(group: number): boolean {
    try {
      return readFileSync(this.sys("kernel/iommu_groups", String(group), "name"), "utf8").trim() === "vfio-noiommu";
    } catch {
      return false;
    }
  }

  /** The uid that owns the group's device node when it is not root's (a VMM holds the group); undefined otherwise. */
  groupHolder(group: number): number | undefined {
    try {
      const uid = statSync(this.groupNode(group)).uid;
      return uid === 0 ? undefined : uid;
    } catch {
      return undefined;
    }
  }

  /**
   * The device, if `domain` may have it: the host has an IOMMU, the device exists, is no bridge,
   * and its IOMMU group is viable, meaning every other device of the group either goes to the
   * same domain (`ownerOf` says who each device is assigned to) or is bound to no driver, a
   * vfio driver, pci-stub, or is a bridge. Otherwise the QvmError says why and what to do.
   */
  checkAssignable(bdf: string, domain: string, ownerOf: (bdf: string) => string | undefined): PciDeviceInfo {
    if (!this.iommuEnabled()) {
      throw new QvmError(
        "FAILED_PRECONDITION",
        `this host has no IOMMU enabled (${this.sys("kernel/iommu_groups")} is empty): without one a passed-through device can read and write all of the host's memory by DMA, so qvm refuses; ${NO_IOMMU_HINT}`,
      );
    }
    const dev = this.device(bdf);
    if (!dev) throw new QvmError("NOT_FOUND", `this host has no PCI device ${bdf}; see \`qvm pci ls\``);
    if (dev.classCode >> 16 === 0x06) {
      throw new QvmError("FAILED_PRECONDITION", `${bdf} is a ${dev.className}: only endpoint devices (a NIC, a USB controller) can be passed to a domain`);
    }
    if (dev.iommuGroup < 0) throw new QvmError("FAILED_PRECONDITION", `${bdf} is in no IOMMU group, so its DMA cannot be confined; ${NO_IOMMU_HINT}`);
    if (this.isNoIommuGroup(dev.iommuGroup)) {
      throw new QvmError("FAILED_PRECONDITION", `${bdf} is in a VFIO no-IOMMU group: nothing would confine its DMA, so qvm refuses; turn enable_unsafe_noiommu_mode off and ${NO_IOMMU_HINT}`);
    }
    const blocking: Array<{ bdf: string; what: string; driver: string }> = [];
    for (const other of this.groupMembers(dev.iommuGroup)) {
      if (other === bdf) continue;
      const owner = ownerOf(other);
      if (owner === domain) continue;
      if (owner) {
        throw new QvmError("FAILED_PRECONDITION", `${bdf} shares IOMMU group ${dev.iommuGroup} with ${other}, which is assigned to ${owner}: a group's devices can reach each other, so the whole group goes to one domain`);
      }
      const driver = this.driverOf(other);
      const info = this.device(other);
      if (!driver || GROUP_SAFE_DRIVERS.has(driver) || driver.startsWith("vfio") || (info && isBridge(info.classCode))) continue;
      blocking.push({ bdf: other, what: info?.className ?? "a device", driver });
    }
    if (blocking.length) {
      const held = blocking.map((b) => `${b.bdf} (${b.what}, host driver ${b.driver})`).join(", ");
      throw new QvmError(
        "FAILED_PRECONDITION",
        `IOMMU group ${dev.iommuGroup} of ${bdf} is not viable: it also holds ${held}; a group's devices can reach each other, so assign them to ${domain} together (\`qvm pci attach --persistent ${domain} ${[bdf, ...blocking.map((b) => b.bdf)].join(" ")}\`), unbind them from their drivers, or put the card in a slot with a group of its own`,
      );
    }
    return dev;
  }
}

/** The last component of a symbolic link's target ("e1000e", "7"); "" when there is no link. */
function linkName(link: string): string {
  try {
    return path.basename(readlinkSync(link));
  } catch {
    return "";
  }
}

/** "0x8086" → "8086". */
function hexId(text: string): string {
  const n = Number.parseInt(text, 16);
  return Number.isFinite(n) ? (n & 0xffff).toString(16).padStart(4, "0") : "????";
}
