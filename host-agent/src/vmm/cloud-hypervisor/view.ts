// Where a cloud-hypervisor VMM sees a domain's files. A jailed CH gets a fixed view, the same for
// every domain (/vm/run, /vm/log, /vm/kernel, /vm/initrd, /vm/disk<N>), which its jail maps to
// that domain's own files. CH's snapshot records the paths the VM was made with, and its restore
// cannot change them (RestoreConfig has no socket or disk paths): with the fixed view a snapshot
// of one VM restores as another, whose jail shows its own files at the same paths. Backing files
// of qcow2 overlays stay at their host paths (overlays name them absolutely; they are shared and
// read-only). Unjailed (a qvmd that is not root), CH sees the host's paths and cannot restore.
import path from "node:path";
import type { VmSpec } from "../driver.js";

export interface ChView {
  runtimeDir: string;
  logDir: string;
  kernel: string;
  initrd: string;
  /** One per VmSpec.disks entry, in order. */
  disks: string[];
  /** Where the VMM writes or reads a snapshot (VmSpec.snapshotDir), when it has one. */
  snapshot?: string;
}

export const FIXED_VIEW_ROOT = "/vm";

export function fixedView(spec: VmSpec): ChView {
  return {
    runtimeDir: `${FIXED_VIEW_ROOT}/run`,
    logDir: `${FIXED_VIEW_ROOT}/log`,
    kernel: `${FIXED_VIEW_ROOT}/kernel`,
    initrd: `${FIXED_VIEW_ROOT}/initrd`,
    disks: spec.disks.map((_, i) => `${FIXED_VIEW_ROOT}/disk${i}`),
    ...(spec.snapshotDir ? { snapshot: SNAPSHOT_VIEW } : {}),
  };
}

/** Where a jailed VMM sees its snapshot directory (written by snapshot(), read by restore). */
export const SNAPSHOT_VIEW = `${FIXED_VIEW_ROOT}/snapshot`;

export function hostView(spec: VmSpec): ChView {
  return {
    runtimeDir: spec.runtimeDir,
    logDir: spec.logDir,
    kernel: spec.kernel.image,
    initrd: spec.kernel.initrd,
    disks: spec.disks.map((d) => d.path),
    ...(spec.snapshotDir ? { snapshot: spec.snapshotDir } : {}),
  };
}

/** The files CH makes or writes, under a view's runtime and log directories. */
export function chFiles(view: Pick<ChView, "runtimeDir" | "logDir">) {
  return {
    /** `--api-socket`: the REST API. */
    apiSocket: path.join(view.runtimeDir, "api.sock"),
    /** The hybrid vsock socket, named as QEMU domains name theirs (`_50`, `_51` listeners beside it). */
    vsockSocket: path.join(view.runtimeDir, "vsock.sock"),
    consoleSocket: path.join(view.runtimeDir, "console.sock"),
    /** `--event-monitor`: lifecycle events, kept with the logs. */
    events: path.join(view.logDir, "vmm-events.log"),
  };
}

/** host path → the path the view shows it at, for the jail (prepareJail's `view`). */
export function viewMap(spec: VmSpec, view: ChView): Map<string, string> {
  const m = new Map<string, string>([
    [spec.runtimeDir, view.runtimeDir],
    [spec.logDir, view.logDir],
    [spec.kernel.image, view.kernel],
    [spec.kernel.initrd, view.initrd],
  ]);
  spec.disks.forEach((d, i) => m.set(d.path, view.disks[i]!));
  return m;
}
