// Admin requests parsed once, at the boundary, into the core's typed commands. A field that is
// malformed is refused here with INVALID_ARGUMENT naming it; what passes is what the core gets.
import { QvmError, adminV1, domainClassWord } from "@qvm/protocol";
import type { CreateDomainInput } from "../domain/registry.js";
import {
  DOMAIN_CLASSES,
  EXEC_SIGNALS,
  MAX_FIREWALL_LINE_BYTES,
  MAX_FIREWALL_RULES,
  UNKNOWN_WORD,
  MAX_PCI_DEVICES,
  isExecSignal,
  isUsbBusId,
  parsePciAddress,
  quoteGuestText,
  type ExecSignal,
} from "@qvm/protocol/contracts";
import { validateDomainName } from "../model/names.js";
import { usbPlugNumber } from "../model/domain.js";
import { DEFAULT_WINDOW_SIZE } from "../domain/windows.js";
import path from "node:path";
import type { CreateBackupInput, ExecCommand, RestoreBackupInput, RestoreOrphanInput } from "../core/qvmd.js";
import type { CopyFrom, PasteInto } from "../clipboard/global-clipboard.js";
import { isValidServiceName, splitServiceName } from "../qrexec/service-command.js";

/** Longest command (argv bytes or shell line) an Exec may carry. */
export const MAX_ARGV_BYTES = 128 * 1024;
export const MAX_ENV_ENTRIES = 256;
/** A terminal without a size gets the classic one. */
const DEFAULT_PTY = { rows: 24, cols: 80 };

/** A domain's name, validated. */
export function domainName(name: string): string {
  return validateDomainName(name);
}

/** A domain's name, or "" for the global properties. */
export function domainOrGlobal(name: string): string {
  return name === "" ? "" : validateDomainName(name);
}

/** A new domain: its class from the enum (UNSPECIFIED: AppVM); the registry checks the rest. */
export function parseCreateDomain(r: adminV1.CreateDomainRequest): CreateDomainInput {
  const klass = r.class === adminV1.DomainClass.DOMAIN_CLASS_UNSPECIFIED ? "AppVM" : domainClassWord(r.class);
  if (klass === UNKNOWN_WORD) throw new QvmError("INVALID_ARGUMENT", `unknown class ${r.class}; classes: ${DOMAIN_CLASSES.join(", ")}`);
  return { name: r.name, klass, template: r.template, label: r.label, properties: r.properties };
}

/** Longest id of kept-aside volumes: a domain name, a time and a counter. */
const MAX_ORPHAN_ID = 255;

/** The id of kept-aside volumes: a single name (the core only accepts one that is there). */
export function orphanId(id: string): string {
  if (!id || id.length > MAX_ORPHAN_ID || id.includes("/") || id.includes("\0")) {
    throw new QvmError("INVALID_ARGUMENT", `name kept-aside volumes by their id as \`qvm volume orphans\` lists it, not ${JSON.stringify(id.slice(0, 80))}`);
  }
  return id;
}

/** Kept-aside volumes to register again: the class from the enum (UNSPECIFIED: decided from what they hold). */
export function parseRestoreOrphan(r: adminV1.RestoreOrphanVolumesRequest): RestoreOrphanInput {
  const klass = r.class === adminV1.DomainClass.DOMAIN_CLASS_UNSPECIFIED ? "" : domainClassWord(r.class);
  if (klass === UNKNOWN_WORD) throw new QvmError("INVALID_ARGUMENT", `unknown class ${r.class}; classes: ${DOMAIN_CLASSES.join(", ")}`);
  return { id: orphanId(r.id), name: r.name ? validateDomainName(r.name) : "", klass, template: r.template, label: r.label };
}

export function parseExecStart(s: adminV1.ExecStart): ExecCommand {
  const common = {
    target: s.dispvm ? { dispvm: s.dispvm === "@default" ? "" : domainOrGlobal(s.dispvm) } : { domain: domainName(s.domain) },
    noAutostart: s.noAutostart,
    user: s.user,
    cwd: s.cwd,
    env: s.env,
  };
  if (Object.keys(s.env).length > MAX_ENV_ENTRIES) throw new QvmError("INVALID_ARGUMENT", `more than ${MAX_ENV_ENTRIES} environment variables`);
  if (s.service) {
    if (s.argv.length || s.shellCommand || s.pty) throw new QvmError("INVALID_ARGUMENT", "a service call takes no command and no terminal");
    const { service, argument } = splitServiceName(s.service);
    if (!isValidServiceName(service)) throw new QvmError("INVALID_ARGUMENT", `invalid service name ${JSON.stringify(service)}: use letters, digits, "_", "." and "-"`);
    return { ...common, what: { service, argument } };
  }
  const hasArgv = s.argv.length > 0;
  if (hasArgv === Boolean(s.shellCommand)) throw new QvmError("INVALID_ARGUMENT", "give either a command (argv) or a shell command, not both or neither");
  const size = s.argv.reduce((n, a) => n + a.length, 0) + s.shellCommand.length;
  if (size > MAX_ARGV_BYTES) throw new QvmError("INVALID_ARGUMENT", `the command is longer than ${MAX_ARGV_BYTES} bytes`);
  return {
    ...common,
    what: hasArgv ? { argv: s.argv } : { shell: s.shellCommand },
    pty: s.pty ? { rows: s.window?.rows || DEFAULT_PTY.rows, cols: s.window?.cols || DEFAULT_PTY.cols } : undefined,
  };
}

export function parseSignal(name: string): ExecSignal {
  if (!isExecSignal(name)) throw new QvmError("INVALID_ARGUMENT", `signal must be one of ${EXEC_SIGNALS.join(", ")}`);
  return name;
}

export function parseSize(sizeBytes: number): number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new QvmError("INVALID_ARGUMENT", `the size must be a positive number of bytes, not ${sizeBytes}`);
  return sizeBytes;
}

/**
 * Firewall rules as SetFirewall carries them (admin API lines), bounded and strictly printable
 * ASCII as Qubes' admin.vm.firewall.Set; the core parses each one (all or nothing).
 */
export function firewallLines(rules: readonly string[]): string[] {
  if (rules.length > MAX_FIREWALL_RULES) throw new QvmError("RESOURCE_EXHAUSTED", `${rules.length} firewall rules: at most ${MAX_FIREWALL_RULES} per domain`);
  for (const [i, line] of rules.entries()) {
    if (line.length > MAX_FIREWALL_LINE_BYTES) throw new QvmError("RESOURCE_EXHAUSTED", `firewall rule ${i + 1}: longer than ${MAX_FIREWALL_LINE_BYTES} bytes`);
    const bad = /[^\x20-\x7e]/.exec(line);
    if (bad) {
      const code = bad[0].charCodeAt(0).toString(16).padStart(4, "0");
      throw new QvmError("INVALID_ARGUMENT", `firewall rule ${i + 1}: character U+${code} at position ${bad.index + 1}: a rule is printable ASCII only`);
    }
  }
  return [...rules];
}

/**
 * PCI devices named as `qvm pci ls` shows them (0000:00:19.0), as 00:19.0 or as Qubes does
 * (dom0:00_19.0): their canonical BDFs; at least one, at most MAX_PCI_DEVICES.
 */
export function pciDevices(texts: readonly string[]): string[] {
  if (!texts.length) throw new QvmError("INVALID_ARGUMENT", "name at least one PCI device, as `qvm pci ls` shows it");
  if (texts.length > MAX_PCI_DEVICES) throw new QvmError("INVALID_ARGUMENT", `${texts.length} PCI devices: a domain has at most ${MAX_PCI_DEVICES}`);
  return texts.map(parsePciAddress);
}

/** A window's size from a request: 0 for either side means the default. */
export function windowSize(width: number, height: number): { width: number; height: number } {
  return { width: width || DEFAULT_WINDOW_SIZE.width, height: height || DEFAULT_WINDOW_SIZE.height };
}

/** A window id in a request: qvmd's ids start at 1. */
function windowId(id: number): number {
  if (!Number.isSafeInteger(id) || id < 1) throw new QvmError("INVALID_ARGUMENT", `window ${id}: window ids start at 1 (see ListWindows)`);
  return id;
}

/** ClipboardCopy: a domain, and a window of it or the text of its terminal. */
export function parseClipboardCopy(r: adminV1.ClipboardCopyRequest): { domain: string; from: CopyFrom } {
  const domain = domainName(r.domain);
  switch (r.from?.$case) {
    case "windowId":
      return { domain, from: { window: windowId(r.from.value) } };
    case "terminal":
      return { domain, from: { terminal: r.from.value } };
    default:
      throw new QvmError("INVALID_ARGUMENT", "say what to copy: a window_id of the domain, or the terminal's text");
  }
}

/** ClipboardPaste: a domain, and a window of it or its terminal. */
export function parseClipboardPaste(r: adminV1.ClipboardPasteRequest): { domain: string; into: PasteInto } {
  const domain = domainName(r.domain);
  switch (r.into?.$case) {
    case "windowId":
      return { domain, into: { window: windowId(r.into.value) } };
    case "terminal":
      if (r.into.value) return { domain, into: { terminal: true } };
      break;
  }
  throw new QvmError("INVALID_ARGUMENT", "say where to paste: a window_id of the domain, or terminal: true");
}

/**
 * A USB device in an Attach/DetachUsbDevice request: the domain, the backend (both domain names)
 * and a sysfs bus id ("2-1", "1-1.4"), each checked here so the core gets only well-formed names.
 */
export function parseUsbRequest(r: { domain: string; backend: string; busid: string }): { domain: string; backend: string; busid: string } {
  const domain = domainName(r.domain);
  if (!r.backend) throw new QvmError("INVALID_ARGUMENT", "name the device's backend (the domain that has it, sys-usb), as `qvm usb list` shows it: BACKEND:BUSID");
  const backend = domainName(r.backend);
  if (!isUsbBusId(r.busid)) {
    throw new QvmError("INVALID_ARGUMENT", `${quoteGuestText(r.busid, 40)} is not a USB bus id (2-1, 1-1.4): name the device as \`qvm usb list\` shows it, BACKEND:BUSID (sys-usb:2-1)`);
  }
  return { domain, backend, busid: r.busid };
}

/** A plug's id as `qvm usb plugs` lists it (usb1 … usb8); the core answers NOT_FOUND for one the domain lacks. */
export function usbPlugId(id: string): string {
  if (usbPlugNumber(id) === undefined) throw new QvmError("INVALID_ARGUMENT", `${quoteGuestText(id, 20)} is not a USB plug id: name it as \`qvm usb plugs DOMAIN\` lists it (usb1)`);
  return id;
}

// ---- backups: qvmd (root) opens the files named, so only absolute paths in normal form ----------

/** The longest path accepted (Linux's PATH_MAX, with its NUL). */
const MAX_BACKUP_PATH = 4095;
/** The most files of an incremental chain one request may name (the format's MAX_CHAIN_DEPTH). */
const MAX_CHAIN_FILES = 1000;

function backupPath(p: string, what: string): string {
  if (p.length === 0) throw new QvmError("INVALID_ARGUMENT", `the ${what} is missing`);
  if (p.length > MAX_BACKUP_PATH || !path.isAbsolute(p) || /\p{Cc}/u.test(p)) {
    throw new QvmError("INVALID_ARGUMENT", `the ${what} must be an absolute path (qvmd opens it, not the caller): ${JSON.stringify(p.slice(0, 200))}`);
  }
  return path.normalize(p);
}

function chainPaths(chain: readonly string[]): string[] {
  if (chain.length > MAX_CHAIN_FILES) throw new QvmError("INVALID_ARGUMENT", `at most ${MAX_CHAIN_FILES} chain files`);
  return chain.map((c) => backupPath(c, "chain file"));
}

function passphrase(p: string): string {
  if (p.length === 0) throw new QvmError("INVALID_ARGUMENT", "a backup needs a non-empty passphrase");
  return p;
}

export function parseCreateBackup(r: adminV1.CreateBackupRequest): CreateBackupInput {
  return {
    file: backupPath(r.file, "backup file"),
    domains: r.domains.map(domainName),
    passphrase: passphrase(r.passphrase),
    includeRoot: r.includeRoot,
    incrementalFrom: r.incrementalFrom ? backupPath(r.incrementalFrom, "earlier backup (--incremental-from)") : "",
    chain: chainPaths(r.chain),
  };
}

export function parseVerifyBackup(r: adminV1.VerifyBackupRequest): { file: string; chain: string[]; passphrase: string } {
  return { file: backupPath(r.file, "backup file"), chain: chainPaths(r.chain), passphrase: passphrase(r.passphrase) };
}

export function parseRestoreBackup(r: adminV1.RestoreBackupRequest): RestoreBackupInput {
  return { ...parseVerifyBackup(r), domains: r.domains.map(domainName), renameConflicts: r.renameConflicts };
}
