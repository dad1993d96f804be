// Names for PCI ids: the class names every host has (a built-in table of the common ones) and,
// when the pci.ids database is installed (Debian package pci.ids, which pciutils pulls in), the
// vendor, device and class names lspci prints. Read from the same root as sysfs, so tests give a
// fake database.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";

/** Where Debian (misc) and Fedora/Qubes (hwdata) install the database. */
const PCI_IDS_FILES = ["usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids"];

/** Base classes, and the subclasses people pass through or see next to them (PCI code and ID assignment spec). */
const BUILTIN_CLASSES: Record<string, string> = {
  "00": "Unclassified device",
  "01": "Mass storage controller",
  "0100": "SCSI storage controller",
  "0101": "IDE interface",
  "0104": "RAID bus controller",
  "0106": "SATA controller",
  "0107": "Serial Attached SCSI controller",
  "0108": "Non-Volatile memory controller",
  "02": "Network controller",
  "0200": "Ethernet controller",
  "0280": "Network controller",
  "03": "Display controller",
  "0300": "VGA compatible controller",
  "0302": "3D controller",
  "04": "Multimedia controller",
  "0401": "Multimedia audio controller",
  "0403": "Audio device",
  "05": "Memory controller",
  "06": "Bridge",
  "0600": "Host bridge",
  "0601": "ISA bridge",
  "0604": "PCI bridge",
  "0680": "Bridge",
  "07": "Communication controller",
  "0780": "Communication controller",
  "08": "Generic system peripheral",
  "0880": "System peripheral",
  "09": "Input device controller",
  "0c": "Serial bus controller",
  "0c03": "USB controller",
  "0c05": "SMBus",
  "0c80": "Serial bus controller",
  "0d": "Wireless controller",
  "10": "Encryption controller",
  "11": "Signal processing controller",
  "12": "Processing accelerators",
  "13": "Non-Essential Instrumentation",
  ff: "Unassigned class",
};

interface IdsDatabase {
  vendors: Map<string, string>;
  /** "vvvv:dddd" → device name. */
  devices: Map<string, string>;
  /** "cc" and "ccss" → class and subclass names. */
  classes: Map<string, string>;
}

let cache: { file: string; mtimeMs: number; db: IdsDatabase } | undefined;

function parseIds(text: string): IdsDatabase {
  const db: IdsDatabase = { vendors: new Map(), devices: new Map(), classes: new Map() };
  let vendor = "";
  let klass = "";
  let inClasses = false;
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    if (line.startsWith("C ")) {
      // "C 02  Network controller"
      const m = /^C ([0-9a-f]{2})\s+(.*)$/.exec(line);
      inClasses = true;
      klass = m?.[1] ?? "";
      if (m) db.classes.set(klass, m[2]!.trim());
      continue;
    }
    if (!line.startsWith("\t")) {
      // "8086  Intel Corporation" (vendors come before the class section)
      const m = /^([0-9a-f]{4})\s+(.*)$/.exec(line);
      inClasses = false;
      vendor = m?.[1] ?? "";
      if (m) db.vendors.set(vendor, m[2]!.trim());
      continue;
    }
    if (line.startsWith("\t\t")) continue; // subsystems and programming interfaces
    const m = /^\t([0-9a-f]{2,4})\s+(.*)$/.exec(line);
    if (!m) continue;
    if (inClasses && klass) db.classes.set(`${klass}${m[1]}`, m[2]!.trim());
    else if (vendor && m[1]!.length === 4) db.devices.set(`${vendor}:${m[1]}`, m[2]!.trim());
  }
  return db;
}

/** The database under `root`, parsed once per change of the file; undefined when none is installed. */
function database(root: string): IdsDatabase | undefined {
  for (const rel of PCI_IDS_FILES) {
    const file = path.join(root, rel);
    let mtimeMs: number;
    try {
      mtimeMs = statSync(file).mtimeMs;
    } catch {
      continue;
    }
    if (cache?.file === file && cache.mtimeMs === mtimeMs) return cache.db;
    try {
      const db = parseIds(readFileSync(file, "utf8"));
      cache = { file, mtimeMs, db };
      return db;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Text from the host's database, clipped to printable ASCII (it ends up in tables and errors). */
function clean(text: string | undefined): string {
  return (text ?? "").replace(/[^\x20-\x7e]/g, "?").slice(0, 120);
}

export interface PciNames {
  className: string;
  vendorName: string;
  deviceName: string;
}

/** Names for a device's class code (0xccsspp) and ids ("8086", "15bb"); "" for what is not known. */
export function pciNames(root: string, classCode: number, vendorId: string, deviceId: string): PciNames {
  const db = database(root);
  const cc = ((classCode >> 16) & 0xff).toString(16).padStart(2, "0");
  const ccss = `${cc}${((classCode >> 8) & 0xff).toString(16).padStart(2, "0")}`;
  const className = db?.classes.get(ccss) ?? BUILTIN_CLASSES[ccss] ?? db?.classes.get(cc) ?? BUILTIN_CLASSES[cc] ?? `Class ${ccss}`;
  return { className: clean(className), vendorName: clean(db?.vendors.get(vendorId)), deviceName: clean(db?.devices.get(`${vendorId}:${deviceId}`)) };
}
