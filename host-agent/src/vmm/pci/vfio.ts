// Handing PCI devices to a domain's VMM with VFIO, and back to the host when it stops.
//
// At start, for each device: driver_override = vfio-pci, unbind it from its host driver, ask
// the kernel to probe it again (drivers_probe), so vfio-pci takes it and /dev/vfio/GROUP
// appears; that node is given to the VMM's uid, and the VMM's jail shows it with
// /dev/vfio/vfio. What was done is recorded first (RUNTIME/vfio/NAME.json, outside the VMM's
// own directory, which its uid owns and could change), so that the exit path, a restarted
// qvmd or a later start can give each device back to its host driver: override cleared, unbound
// from vfio-pci, probed again. A device the administrator had bound to vfio-pci stays there.
//
// QEMU finds a device's group by reading the link `iommu_group` in its sysfs directory (and
// nothing else there: QEMU 7.2's vfio_realize also asks whether `subsystem` is the mdev bus).
// The jail shows no /sys, so QEMU is given `sysfsdev=` a stand-in directory in the domain's
// runtime directory, named by the BDF and holding only that link.
import { existsSync, mkdirSync, rmSync, statSync, symlinkSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { PCI_ADDRESS_PATTERN, isPciAddress } from "@qvm/protocol/contracts";
import { readJson, writeJsonAtomic } from "@qvm/images";
import type { VmmUser } from "../driver.js";
import type { JailBind } from "../sandbox/jail.js";
import { findExecutable } from "../host-tools.js";
import { VFIO_DRIVER, type PciHost } from "./sysfs.js";

export interface VfioBinding {
  bdf: string;
  group: number;
  /** The driver it had before ("" for none); vfio-pci: the administrator's choice, kept. */
  previousDriver: string;
  /** The driver_override it had before ("" for none). */
  previousOverride: string;
}

const recordSchema = z
  .object({
    bindings: z
      .array(
        z
          .object({
            bdf: z.string().regex(PCI_ADDRESS_PATTERN),
            group: z.number().int().min(0),
            previousDriver: z.string().regex(/^[A-Za-z0-9_.-]{0,64}$/),
            previousOverride: z.string().regex(/^[A-Za-z0-9_.-]{0,64}$/),
          })
          .strict(),
      )
      .max(64),
  })
  .strict();

/**
 * How much memory the VMM may lock: VFIO pins all of guest RAM (a device may DMA into any of it
 * at any time), plus room for QEMU's own mappings, as libvirt allows (guest RAM + 1 GiB).
 */
export function vfioMemlockBytes(memoryMiB: number): number {
  return (memoryMiB + 1024) * 1024 * 1024;
}

/** `command` with its locked-memory limit raised (prlimit runs as root before the jail drops privileges, then execs). */
export function withMemlock(bytes: number, command: string[]): string[] {
  // Found through PATH (on NixOS it is not in /usr/bin).
  return [findExecutable("prlimit") ?? "/usr/bin/prlimit", `--memlock=${bytes}:${bytes}`, "--", ...command];
}

/** CAP_SYS_RESOURCE: lets a process raise a hard resource limit. */
const CAP_SYS_RESOURCE = 24n;

/**
 * Refuses, naming the fix, when qvmd could not give its VMM a locked-memory limit of `bytes`:
 * its own hard limit is lower and it may not raise it (a systemd unit without LimitMEMLOCK=;
 * the shipped one sets it). `limits` and `status` are /proc/self/limits and /proc/self/status.
 */
export function checkMemlock(name: string, bytes: number, limits: string, status: string): void {
  const hard = /^Max locked memory\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  if (hard === undefined || hard === "unlimited" || Number(hard) >= bytes) return;
  const eff = /^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1];
  if (eff && (BigInt(`0x${eff}`) >> CAP_SYS_RESOURCE) & 1n) return;
  const mib = (n: number) => `${Math.round(n / 1024 / 1024)} MiB`;
  throw new QvmError(
    "FAILED_PRECONDITION",
    `${name}: VFIO pins all guest memory, so its VMM must be allowed to lock ${mib(bytes)}, but qvmd's own limit is ${mib(Number(hard))} and it may not raise it: run qvmd with LimitMEMLOCK=infinity (systemd; the shipped unit has it) or \`ulimit -l unlimited\``,
  );
}

/** Where the devices a domain's VMM holds are recorded: RUNTIME/vfio/NAME.json, beside RUNTIME/domains/NAME. */
export function vfioRecordOf(runtimeDir: string, name: string): string {
  return path.join(path.dirname(path.dirname(runtimeDir)), "vfio", `${name}.json`);
}

/** The directory QEMU is given for a device (`-device vfio-pci,sysfsdev=`): RUNTIME/domains/NAME/pci/BDF. */
export function vfioStandIn(runtimeDir: string, bdf: string): string {
  return path.join(runtimeDir, "pci", bdf);
}

function writeRecord(file: string, bindings: VfioBinding[]): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeJsonAtomic(file, { bindings });
}

/** The recorded bindings; none when there is no record (a damaged one is reported and ignored). */
function readRecord(file: string, log: (msg: string) => void): VfioBinding[] {
  if (!existsSync(file)) return [];
  try {
    return readJson(file, recordSchema, "the devices it names may still be bound to vfio-pci").bindings;
  } catch (err) {
    log(`${(err as Error).message}`);
    return [];
  }
}

/**
 * Binds each device to vfio-pci for the VMM of `name` running as `user`, records it first in
 * `recordFile`, and gives `user` the groups' device nodes. On failure every device bound so far
 * is given back and the error names the device and the fix.
 */
export async function bindToVfio(host: PciHost, name: string, bdfs: readonly string[], user: VmmUser, recordFile: string, log: (msg: string) => void): Promise<VfioBinding[]> {
  if (!existsSync(host.sys("bus/pci/drivers", VFIO_DRIVER))) {
    throw new QvmError("MISSING_DEPENDENCY", `${name}: the vfio-pci driver is not loaded, so its PCI devices cannot be passed through: \`modprobe vfio-pci\` (and list it in /etc/modules)`);
  }
  const done: VfioBinding[] = [];
  try {
    for (const bdf of bdfs) {
      if (!isPciAddress(bdf) || !existsSync(host.deviceDir(bdf))) throw new QvmError("NOT_FOUND", `${name}: this host has no PCI device ${bdf}; see \`qvm pci ls\``);
      const group = host.groupOf(bdf);
      if (group < 0) throw new QvmError("FAILED_PRECONDITION", `${name}: ${bdf} is in no IOMMU group: this host has no IOMMU enabled`);
      const holder = host.groupHolder(group);
      if (holder !== undefined && holder !== user.uid) {
        throw new QvmError("FAILED_PRECONDITION", `${name}: ${bdf} (IOMMU group ${group}) is held by another domain's VMM (uid ${holder}); it goes back to the host when that domain stops`);
      }
      const binding: VfioBinding = { bdf, group, previousDriver: host.driverOf(bdf), previousOverride: host.overrideOf(bdf) };
      done.push(binding);
      writeRecord(recordFile, done);
      if (binding.previousDriver !== VFIO_DRIVER) {
        await host.write(path.join(host.deviceDir(bdf), "driver_override"), VFIO_DRIVER);
        if (binding.previousDriver) await host.write(path.join(host.deviceDir(bdf), "driver/unbind"), bdf);
        await host.write(host.sys("bus/pci/drivers_probe"), bdf);
        const now = host.driverOf(bdf);
        if (now !== VFIO_DRIVER) throw new QvmError("FAILED_PRECONDITION", `${name}: ${bdf} did not bind to vfio-pci (its driver is ${now || "none"}); see the kernel log (dmesg)`);
        log(`${name}: ${bdf} unbound from ${binding.previousDriver || "no driver"} and bound to vfio-pci`);
      }
    }
    for (const group of new Set(done.map((b) => b.group))) {
      const node = host.groupNode(group);
      if (!existsSync(node)) throw new QvmError("FAILED_PRECONDITION", `${name}: ${node} did not appear after binding IOMMU group ${group} to vfio-pci`);
      host.chown(node, user.uid, user.gid);
    }
    return done;
  } catch (err) {
    await releaseBindings(host, name, done, log);
    rmSync(recordFile, { force: true });
    throw err;
  }
}

/** The paths the VMM's jail must show for these bindings: VFIO's container and each group's node. */
export function vfioJailBinds(host: PciHost, bindings: readonly VfioBinding[]): JailBind[] {
  if (!bindings.length) return [];
  const groups = [...new Set(bindings.map((b) => b.group))];
  return [{ path: host.containerNode(), mode: "dev" }, ...groups.map((g): JailBind => ({ path: host.groupNode(g), mode: "dev" }))];
}

/**
 * The stand-in sysfs directories QEMU reads each device's group from (see the top of this file).
 * Made after the jail's preparation gave the runtime directory to the VMM's uid: they stay
 * root's, and the link is never followed by a chown.
 */
export function makeVfioStandIns(host: PciHost, runtimeDir: string, bindings: readonly VfioBinding[]): void {
  for (const b of bindings) {
    const dir = vfioStandIn(runtimeDir, b.bdf);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    symlinkSync(host.sys("kernel/iommu_groups", String(b.group)), path.join(dir, "iommu_group"));
  }
}

/** Gives back the devices recorded for `name`'s VMM (it has exited, or never started) and removes the record. */
export async function releaseVfio(host: PciHost, name: string, recordFile: string, log: (msg: string) => void): Promise<void> {
  const bindings = readRecord(recordFile, log);
  await releaseBindings(host, name, bindings, log);
  rmSync(recordFile, { force: true });
}

/**
 * Each device back to the host: its group node back to root, then (unless the administrator had
 * it on vfio-pci) the override restored, unbound from vfio-pci and probed again, so its host
 * driver takes it. A device no longer on vfio-pci was changed by someone else and is left alone.
 * Failures are logged, never thrown: this runs on exit paths.
 */
async function releaseBindings(host: PciHost, name: string, bindings: readonly VfioBinding[], log: (msg: string) => void): Promise<void> {
  for (const group of new Set(bindings.map((b) => b.group))) {
    const node = host.groupNode(group);
    try {
      if (existsSync(node) && statSync(node).uid !== 0) host.chown(node, 0, 0);
    } catch (err) {
      log(`${name}: cannot give ${node} back to root: ${(err as Error).message}`);
    }
  }
  for (const b of [...bindings].reverse()) {
    if (b.previousDriver === VFIO_DRIVER || host.driverOf(b.bdf) !== VFIO_DRIVER) continue;
    try {
      await host.write(path.join(host.deviceDir(b.bdf), "driver_override"), b.previousOverride || "\n");
      await host.write(path.join(host.deviceDir(b.bdf), "driver/unbind"), b.bdf);
      await host.write(host.sys("bus/pci/drivers_probe"), b.bdf);
      const now = host.driverOf(b.bdf);
      log(`${name}: ${b.bdf} given back to the host (${now ? `driver ${now}` : "no driver took it"}${b.previousDriver && now !== b.previousDriver ? `; it had ${b.previousDriver}` : ""})`);
    } catch (err) {
      log(`${name}: cannot give ${b.bdf} back to the host: ${(err as Error).message}`);
    }
  }
}
