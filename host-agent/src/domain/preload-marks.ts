// The names Qubes 4.3 gives preloaded disposables, and what a stored record says about one. The
// records are only the mirror that survives a qvmd restart (and what `qvm features` shows); the
// pool in memory (dispvm-preload.ts) decides who is preloaded while qvmd runs.
import { QvmError } from "@qvm/protocol";
import type { DomainRecord } from "../model/domain.js";
import { MAX_PRELOAD_DISPVMS } from "../model/properties.js";

/** On a template for disposables: how many of its disposables to keep preloaded. */
export const PRELOAD_MAX = "preload-dispvm-max";
/** On a template for disposables: its preloaded disposables not yet handed out, space-separated (kept by qvmd). */
export const PRELOAD_LIST = "preload-dispvm";
/** On a disposable: it is being preloaded, or was handed out and is not yet in use (kept by qvmd). */
export const PRELOAD_IN_PROGRESS = "preload-dispvm-in-progress";
/** On a disposable: it booted and was paused as a preload (kept by qvmd). */
export const PRELOAD_COMPLETED = "preload-dispvm-completed";
/**
 * The global property giving default_dispvm's count when it has no preload-dispvm-max feature
 * (Qubes keeps it as dom0's preload-dispvm-max feature; qvm has no dom0 domain).
 */
export const PRELOAD_GLOBAL = "preload_dispvm_max";

/** Features only qvmd writes: a person setting them could hide a domain or expose a preload. */
const KEPT_BY_QVMD = new Set([PRELOAD_LIST, PRELOAD_IN_PROGRESS, PRELOAD_COMPLETED]);


/** Refuses a feature change a person may not make, naming what to do instead. */
export function checkPreloadFeature(name: string, value?: string): void {
  if (KEPT_BY_QVMD.has(name)) {
    throw new QvmError("INVALID_ARGUMENT", `${name} is kept by qvmd for preloaded disposables; set ${PRELOAD_MAX} on the template for disposables instead`);
  }
  if (name === PRELOAD_MAX && value !== undefined && (!/^\d{1,3}$/.test(value) || Number(value) > MAX_PRELOAD_DISPVMS)) {
    throw new QvmError("INVALID_ARGUMENT", `${PRELOAD_MAX} must be a number of disposables from 0 to ${MAX_PRELOAD_DISPVMS}, not ${JSON.stringify(value.slice(0, 40))}`);
  }
}

/** The names in a template's preload list (its PRELOAD_LIST feature). */
export function preloadList(rec: DomainRecord | undefined): string[] {
  return (rec?.features[PRELOAD_LIST] ?? "").split(" ").filter(Boolean);
}

/** Whether a stored disposable is marked as a preload (listed by its template, or between preload and use). */
export function markedAsPreload(rec: DomainRecord, template: DomainRecord | undefined): boolean {
  return rec.class === "DispVM" && (Boolean(rec.features[PRELOAD_IN_PROGRESS]) || preloadList(template).includes(rec.name));
}
