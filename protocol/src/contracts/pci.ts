// How qvm names a host PCI device (`qvm pci`, the admin API, the domain record). The canonical
// name is the kernel's: the full BDF as sysfs, `lspci -D` and QEMU's vfio-pci write it,
// "0000:00:19.0" (segment:bus:device.function, lowercase hex). Accepted as input too: the short
// form without the segment ("00:19.0", segment 0000) and Qubes' name, backend domain and port
// with "_" for ":" ("dom0:00_19.0"; Qubes' `qvm-pci` lists devices so, dom0 being the host).
// Dependency-free: the CLI and qvmd parse with the same rule.
import { QvmError } from "./errors.js";

/** The canonical form: the only one stored and sent back. */
export const PCI_ADDRESS_PATTERN = /^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/;
/** At most this many devices assigned to one domain (a bound on the record and the VMM's command line). */
export const MAX_PCI_DEVICES = 32;

const SHORT = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$/;
const QUBES = /^dom0:(?:([0-9a-f]{4})_)?([0-9a-f]{2})_([01][0-9a-f])\.([0-7])$/;

/** True for a canonical BDF ("0000:00:19.0"). */
export function isPciAddress(text: string): boolean {
  return PCI_ADDRESS_PATTERN.test(text);
}

/**
 * The canonical BDF of a device named in any accepted form; INVALID_ARGUMENT naming the forms
 * otherwise. Hex digits may be given in either case.
 */
export function parsePciAddress(text: string): string {
  const t = text.trim().toLowerCase();
  const m = SHORT.exec(t) ?? QUBES.exec(t);
  if (!m) {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
    throw new QvmError("INVALID_ARGUMENT", `${shown} is not a PCI device: name it by its BDF as \`qvm pci ls\` shows it (0000:00:19.0), as 00:19.0, or as Qubes does (dom0:00_19.0)`);
  }
  const [, segment, bus, device, fn] = m;
  return `${segment ?? "0000"}:${bus}:${device}.${fn}`;
}

/** Qubes' name of a host device (`qvm-pci`'s BACKEND:DEVID): "dom0:00_19.0", the segment kept when not 0000. */
export function qubesPciName(bdf: string): string {
  const [segment, bus, rest] = bdf.split(":");
  return segment === "0000" ? `dom0:${bus}_${rest}` : `dom0:${segment}_${bus}_${rest}`;
}
