// A fake host for PCI passthrough tests: a directory laid out as the kernel lays out /sys
// (devices, the bus's links to them, drivers, IOMMU groups), /dev/vfio and a pci.ids database,
// and a fake kernel behind the sysfs writes (driver_override, unbind, drivers_probe) that binds
// and unbinds devices as Linux does and records every write. No hardware here has an IOMMU, so
// this is where listing, viability and binding are tested.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PciHost } from "../vmm/pci/sysfs.js";

export interface FakePciDevice {
  bdf: string;
  /** 0xccsspp: 0x020000 is an Ethernet controller. */
  classCode: number;
  vendor: string;
  device: string;
  /** The driver bound now and the one a probe binds without an override; "" or absent for none. */
  driver?: string;
  /** The IOMMU group; absent on a host without an IOMMU. */
  group?: number;
}

/**
 * A laptop: a host bridge; a USB controller sharing its group with a driverless memory
 * controller (viable); an Ethernet controller sharing its group with the audio device and SMBus
 * (not viable); Wi-Fi alone behind a root port; a second NIC behind a bridge in one group (viable).
 */
export const LAPTOP_PCI: FakePciDevice[] = [
  { bdf: "0000:00:00.0", classCode: 0x060000, vendor: "8086", device: "3e34", group: 0 },
  { bdf: "0000:00:14.0", classCode: 0x0c0330, vendor: "8086", device: "9ded", driver: "xhci_hcd", group: 3 },
  { bdf: "0000:00:14.2", classCode: 0x050000, vendor: "8086", device: "9def", group: 3 },
  { bdf: "0000:00:1c.0", classCode: 0x060400, vendor: "8086", device: "9dbc", driver: "pcieport", group: 7 },
  { bdf: "0000:00:1f.3", classCode: 0x040380, vendor: "8086", device: "9dc8", driver: "snd_hda_intel", group: 9 },
  { bdf: "0000:00:1f.4", classCode: 0x0c0500, vendor: "8086", device: "9da3", driver: "i801_smbus", group: 9 },
  { bdf: "0000:00:1f.6", classCode: 0x020000, vendor: "8086", device: "15bd", driver: "e1000e", group: 9 },
  { bdf: "0000:02:00.0", classCode: 0x028000, vendor: "8086", device: "2723", driver: "iwlwifi", group: 8 },
  { bdf: "0000:00:1d.0", classCode: 0x060400, vendor: "8086", device: "9db0", driver: "pcieport", group: 10 },
  { bdf: "0000:03:00.0", classCode: 0x020000, vendor: "10ec", device: "8168", driver: "r8169", group: 10 },
];

/** A few lines of the real pci.ids, enough for LAPTOP_PCI's names. */
export const SAMPLE_PCI_IDS = `# pci.ids (sample)
8086  Intel Corporation
\t15bd  Ethernet Connection (6) I219-LM
\t2723  Wi-Fi 6 AX200
\t9ded  Cannon Point-LP USB 3.1 xHCI Controller
\t\t17aa 2292  ThinkPad T490
10ec  Realtek Semiconductor Co., Ltd.
\t8168  RTL8111/8168/8211/8411 PCI Express Gigabit Ethernet Controller
C 02  Network controller
\t00  Ethernet controller
\t80  Network controller
C 0c  Serial bus controller
\t03  USB controller
\t\t30  XHCI
`;

const VFIO = "vfio-pci";

export class FakeSysfs {
  readonly root: string;
  /** Every sysfs write, as [path below the root, value]. */
  readonly writes: Array<[string, string]> = [];
  private readonly native = new Map<string, string>();
  private readonly groups = new Map<string, number>();

  constructor(devices: readonly FakePciDevice[] = LAPTOP_PCI, opts: { pciIds?: string; vfioLoaded?: boolean } = {}) {
    this.root = mkdtempSync(path.join(os.tmpdir(), "qvm-sysfs-"));
    const drivers = new Set(devices.flatMap((d) => (d.driver ? [d.driver] : [])));
    if (opts.vfioLoaded ?? true) drivers.add(VFIO);
    for (const drv of drivers) mkdirSync(this.at(`sys/bus/pci/drivers/${drv}`), { recursive: true });
    mkdirSync(this.at("sys/bus/pci/devices"), { recursive: true });
    mkdirSync(this.at("sys/kernel/iommu_groups"), { recursive: true });
    writeFileSync(this.at("sys/bus/pci/drivers_probe"), "");
    mkdirSync(this.at("dev/vfio"), { recursive: true });
    writeFileSync(this.at("dev/vfio/vfio"), "");
    chmodSync(this.at("dev/vfio/vfio"), 0o666);
    if (opts.pciIds !== undefined) {
      mkdirSync(this.at("usr/share/misc"), { recursive: true });
      writeFileSync(this.at("usr/share/misc/pci.ids"), opts.pciIds);
    }
    for (const d of devices) {
      const dir = this.at(`sys/devices/pci0000:00/${d.bdf}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, "class"), `0x${d.classCode.toString(16).padStart(6, "0")}\n`);
      writeFileSync(path.join(dir, "vendor"), `0x${d.vendor}\n`);
      writeFileSync(path.join(dir, "device"), `0x${d.device}\n`);
      writeFileSync(path.join(dir, "driver_override"), "(null)\n");
      symlinkSync(`../../../devices/pci0000:00/${d.bdf}`, this.at(`sys/bus/pci/devices/${d.bdf}`));
      if (d.group !== undefined) {
        this.groups.set(d.bdf, d.group);
        mkdirSync(this.at(`sys/kernel/iommu_groups/${d.group}/devices`), { recursive: true });
        symlinkSync(`../../../kernel/iommu_groups/${d.group}`, path.join(dir, "iommu_group"));
        symlinkSync(`../../../../devices/pci0000:00/${d.bdf}`, this.at(`sys/kernel/iommu_groups/${d.group}/devices/${d.bdf}`));
      }
      if (d.driver) {
        this.native.set(d.bdf, d.driver);
        this.bind(d.bdf, d.driver);
      }
    }
  }

  /** A PciHost on this tree whose writes go to the fake kernel. */
  host(): PciHost {
    return new PciHost({ root: this.root, write: (file, value) => this.kernelWrite(file, value) });
  }

  /** The driver bound to `bdf` now ("" for none). */
  driverOf(bdf: string): string {
    try {
      return path.basename(readlinkSync(this.at(`sys/devices/pci0000:00/${bdf}/driver`)));
    } catch {
      return "";
    }
  }

  overrideOf(bdf: string): string {
    return readFileSync(this.at(`sys/devices/pci0000:00/${bdf}/driver_override`), "utf8").trim();
  }

  /** Binds as the kernel does when a driver takes a device (after unbinding any other); vfio-pci makes the group's node. */
  bind(bdf: string, driver: string): void {
    if (this.driverOf(bdf)) this.unbind(bdf);
    symlinkSync(`../../../bus/pci/drivers/${driver}`, this.at(`sys/devices/pci0000:00/${bdf}/driver`));
    const group = this.groups.get(bdf);
    if (driver === VFIO && group !== undefined && !existsSync(this.at(`dev/vfio/${group}`))) writeFileSync(this.at(`dev/vfio/${group}`), "", { mode: 0o600 });
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }

  private at(rel: string): string {
    return path.join(this.root, rel);
  }

  private unbind(bdf: string): void {
    const was = this.driverOf(bdf);
    unlinkSync(this.at(`sys/devices/pci0000:00/${bdf}/driver`));
    const group = this.groups.get(bdf);
    if (was !== VFIO || group === undefined) return;
    const stillVfio = [...this.groups].some(([other, g]) => g === group && other !== bdf && this.driverOf(other) === VFIO);
    if (!stillVfio) rmSync(this.at(`dev/vfio/${group}`), { force: true });
  }

  private kernelWrite(file: string, value: string): void {
    const rel = path.relative(this.root, file);
    this.writes.push([rel, value]);
    const m = /^sys\/bus\/pci\/devices\/([^/]+)\/(driver_override|driver\/unbind)$/.exec(rel);
    if (m?.[2] === "driver_override") {
      writeFileSync(this.at(`sys/devices/pci0000:00/${m[1]}/driver_override`), value === "\n" ? "(null)\n" : `${value}\n`);
    } else if (m?.[2] === "driver/unbind") {
      if (value !== m[1] || !this.driverOf(m[1]!)) throw Object.assign(new Error(`ENODEV: write ${rel}`), { code: "ENODEV" });
      this.unbind(m[1]!);
    } else if (rel === "sys/bus/pci/drivers_probe") {
      if (this.driverOf(value)) return;
      const override = this.overrideOf(value);
      const driver = override !== "(null)" ? override : this.native.get(value);
      if (driver && existsSync(this.at(`sys/bus/pci/drivers/${driver}`))) this.bind(value, driver);
    } else {
      throw Object.assign(new Error(`EACCES: the fake kernel has no ${rel}`), { code: "EACCES" });
    }
  }
}
