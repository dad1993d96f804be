// The hypervisor driver interface, in the style of Kata's Hypervisor: prepare -> start ->
// wait-ready -> stop (graceful / forced) -> pause / resume -> info, plus re-attach to a running
// VMM after qvmd restarts. Backends: QEMU (vmm/qemu/) and, later, cloud-hypervisor.

export type VmmKind = "qemu";
export type Accel = "kvm" | "tcg";

export interface DiskSpec {
  /** virtio-blk serial; the initramfs finds volumes by it (names like vda depend on probe order). */
  serial: string;
  path: string;
  format: "raw" | "qcow2";
  readonly: boolean;
}

export interface VmSpec {
  /** Domain name; already validated by the caller (it is used in paths and process titles). */
  name: string;
  /** Per-domain runtime directory: sockets, pid files, overlays. Removed at stop. */
  runtimeDir: string;
  /** Kept after stop for diagnosis: console.log (serial console), vmm.log, vsock.log. */
  logDir: string;
  kernel: { vmlinuz: string; initrd: string };
  /** Extra kernel command line arguments after qvm's own. */
  kernelArgs?: string[];
  disks: DiskSpec[];
  memoryMiB: number;
  vcpus: number;
  /** vsock context id of the guest (>= 3). */
  guestCid: number;
}

export interface VmExit {
  /** Why it ended, in words a person can act on. */
  reason: string;
  /** True when the guest powered itself off or was stopped on request. */
  clean: boolean;
}

export type VmState = "running" | "paused" | "stopped";

export interface VmInfo {
  vmm: VmmKind;
  accel: Accel;
  state: VmState;
  pid: number;
  /** The hybrid vsock socket: "CONNECT <port>" reaches guest ports, "<path>_<port>" gets guest-initiated ones. */
  vsockPath: string;
  consoleSocket: string;
  consoleLogPath: string;
}

export interface StopOptions {
  /** Skip the ACPI power button: kill the VMM at once. */
  force?: boolean;
  /** How long a graceful stop may take before the VMM is killed. */
  timeoutMs?: number;
}

export interface VmHandle {
  readonly name: string;
  readonly runtimeDir: string;
  /** Settles once, when the VMM has exited and its helpers and runtime files are cleaned up. */
  readonly exited: Promise<VmExit>;
  /** Resolves when the VMM's control channel answers. */
  waitReady(timeoutMs: number): Promise<void>;
  isAlive(): boolean;
  info(): Promise<VmInfo>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  stop(opts?: StopOptions): Promise<VmExit>;
  /** Tells the running VM that disk `index` (its place in VmSpec.disks) grew to sizeBytes. */
  resizeDisk(index: number, sizeBytes: number): Promise<void>;
  /** Stops watching without stopping the VM (qvmd shutting down; a later attach takes over). */
  detach(): void;
}

export interface PreparedVm {
  spec: VmSpec;
  /** The exact command the VMM will run, for logs and benchmarks. */
  command: string[];
  /** Chosen once here, so the command line and the running VM agree. */
  accel: { accel: Accel; why: string };
}

export interface VmmDriver {
  readonly kind: VmmKind;
  /** Throws MISSING_DEPENDENCY naming the install step when a binary is absent. */
  checkHost(): Promise<void>;
  prepare(spec: VmSpec): Promise<PreparedVm>;
  start(prepared: PreparedVm): Promise<VmHandle>;
  /** Re-attaches to a VMM left running in runtimeDir, or returns undefined if none is alive there. */
  attach(runtimeDir: string): Promise<VmHandle | undefined>;
}
