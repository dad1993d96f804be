// Which VMM runs a domain: a table from the `vmm` property's value to a driver, and the
// driver-neutral runtime record each running domain leaves in its runtime directory so that a
// restarted qvmd knows which driver to re-attach with. A second driver is one more table entry.
import { existsSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { readJson, writeJsonAtomic } from "@qvm/images";
import type { VmmDriver, VmmKind } from "./driver.js";

export class DriverTable {
  private readonly drivers = new Map<VmmKind, VmmDriver>();

  constructor(drivers: VmmDriver[]) {
    for (const d of drivers) this.drivers.set(d.kind, d);
  }

  get(kind: VmmKind): VmmDriver {
    const d = this.drivers.get(kind);
    if (!d) throw new QvmError("MISSING_DEPENDENCY", `no VMM driver "${kind}" in this qvmd; available: ${this.kinds().join(", ")}`);
    return d;
  }

  kinds(): VmmKind[] {
    return [...this.drivers.keys()];
  }
}

/** The file every running domain's runtime directory holds, whatever its VMM. */
export const RUNTIME_RECORD_FILE = "domain.json";

const runtimeRecordSchema = z
  .object({
    /** The driver that started the VM (a DriverTable key). */
    vmm: z.string().min(1).max(64),
    domain: z.string().min(1).max(64),
    startedAt: z.string(),
  })
  .strict();
export type RuntimeRecord = z.infer<typeof runtimeRecordSchema>;

export function writeRuntimeRecord(runtimeDir: string, rec: RuntimeRecord): void {
  writeJsonAtomic(path.join(runtimeDir, RUNTIME_RECORD_FILE), rec);
}

/**
 * The record of a runtime directory, or undefined when it has none. Directories made by a qvmd
 * older than the record hold only QEMU's own state: they were all started by the qemu driver.
 */
export function readRuntimeRecord(runtimeDir: string, domain: string): RuntimeRecord | undefined {
  const file = path.join(runtimeDir, RUNTIME_RECORD_FILE);
  if (existsSync(file)) {
    const rec = readJson(file, runtimeRecordSchema, "remove the directory once no VMM for this domain runs");
    if (rec.domain !== domain) throw new QvmError("CORRUPT_STATE", `${file} names domain ${JSON.stringify(rec.domain)}, not ${domain}; remove the directory once no VMM for ${domain} runs`);
    return rec;
  }
  if (existsSync(path.join(runtimeDir, "vmm.json"))) return { vmm: "qemu", domain, startedAt: "" };
  return undefined;
}
