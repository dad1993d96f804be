// The seam between the power-state machine and real VMs: the runner asks a VmFactory for a
// running domain and talks to it through RunningVm only, so its state machine is tested with a
// fake factory (runner.test.ts) and runs QEMU (or any driver) through DomainVm in qvmd.
import type { AgentClient } from "../agent/agent-client.js";
import type { DiskSpec, VmCapabilities, VmExit, VmInfo } from "../vmm/driver.js";
import type { DriverTable } from "../vmm/drivers.js";
import type { DomainAttachments } from "./attachments.js";
import type { BootPlan } from "./boot-plan.js";
import { DomainVm, type DomainVmOptions } from "./domain-vm.js";
import type { DispvmSnapshots } from "./dispvm-snapshots.js";
import type { DomainPaths } from "./paths.js";

/** What the core uses of a guest agent. */
export type GuestAgent = Pick<
  AgentClient,
  "exec" | "signal" | "setNetwork" | "openWindow" | "resizeWindow" | "closeWindow" | "listWindows" | "watchWindows" | "getWindowClipboard" | "setWindowClipboard" | "listUsbDevices" | "watchUsbDevices"
>;

export interface RunningVm {
  readonly name: string;
  /** Settles once, when the VM is gone and its attachments are released. */
  readonly exited: Promise<VmExit>;
  readonly attachments: DomainAttachments;
  readonly agent: GuestAgent;
  /** What its VMM can do beyond the basics (emulated USB devices); absent: nothing (fakes). */
  readonly capabilities?: VmCapabilities;
  info(): Promise<VmInfo>;
  resizeDisk(index: number, sizeBytes: number): Promise<void>;
  /** Clean power-off; after timeoutMs the VMM is killed when `kill`, else a QvmError says it still runs. */
  shutdown(timeoutMs: number, opts: { kill: boolean }): Promise<VmExit>;
  kill(): Promise<VmExit>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Lets go without stopping it; qvmd-held attachments are released. */
  detach(): Promise<void>;
}

export interface VmFactory {
  start(plan: BootPlan, disks: DiskSpec[]): Promise<RunningVm>;
  /** The VM a previous qvmd left running in `runtimeDir`, or undefined when none is alive. */
  reattach(name: string, runtimeDir: string): Promise<RunningVm | undefined>;
}

/** Real domains: DomainVm over the driver the plan chose; re-attach picks it from the runtime record. */
export function domainVmFactory(drivers: DriverTable, paths: DomainPaths, log: (msg: string) => void, snapshots?: DispvmSnapshots): VmFactory {
  return {
    start: (plan, disks) => {
      const opts: DomainVmOptions = {
        name: plan.name,
        driver: plan.driver,
        kernel: plan.kernel,
        disks,
        runtimeDir: plan.runtimeDir,
        logDir: plan.logDir,
        memoryMiB: plan.memoryMiB,
        vcpus: plan.vcpus,
        kernelArgs: plan.kernelArgs,
        agentTimeoutMs: plan.agentTimeoutMs,
        user: plan.user,
        nics: plan.nics,
        devices: plan.devices,
        beforeVmm: plan.beforeVmm,
        log,
      };
      // A disposable on a VMM that restores: from its template's snapshot (dispvm-snapshots.ts).
      if (plan.fromSnapshot && snapshots) return snapshots.start({ ...plan, fromSnapshot: plan.fromSnapshot }, disks, opts);
      return DomainVm.start(opts);
    },
    reattach: (name, runtimeDir) => DomainVm.attach(name, drivers, runtimeDir, paths.logDirOf(name), log),
  };
}
