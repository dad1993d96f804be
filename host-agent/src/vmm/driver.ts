// The hypervisor driver interface, in the style of Kata's Hypervisor: prepare -> start ->
// wait-ready -> stop (graceful / forced) -> pause / resume -> info, plus re-attach to a running
// VMM after qvmd restarts. Optional capabilities (hot-plug, snapshots) are queried before use:
// a driver without them leaves them undefined. Backends: QEMU (vmm/qemu/) and, later,
// cloud-hypervisor; a domain's `vmm` property picks one from the DriverTable (drivers.ts).

/** A driver's name, as the `vmm` property and the runtime record spell it ("qemu"). */
export type VmmKind = string;
export type Accel = "kvm" | "tcg";

export interface DiskSpec {
  /** virtio-blk serial; the initramfs finds volumes by it (names like vda depend on probe order). */
  serial: string;
  path: string;
  format: "raw" | "qcow2";
  readonly: boolean;
  /**
   * Files this disk reads through (a qcow2 overlay's backing chain: a template's root, a
   * disposable's template's private), which a sandboxed VMM must see read-only at the same path.
   */
  backingFiles?: string[];
  /**
   * An encrypted qcow2 disk's key (storage/volume-key.ts), handed to the VMM in memory only; a
   * driver that cannot open encrypted disks refuses the spec at prepare.
   */
  key?: DiskKey;
}

/** A disk key as a driver sees it: the LUKS secret, base64, for QEMU's `-object secret`. */
export interface DiskKey {
  base64(): Buffer;
  /** Forgets the key (its owner calls it once the domain stopped). */
  wipe(): void;
}

/**
 * A network link: a point-to-point Ethernet link whose far end is a socket another domain's VMM
 * (or a user-mode stack such as passt) holds. No host IP address is ever on it.
 */
export interface NicSpec {
  /** Stable id within the domain ("eth0", "vif3"); the guest finds the interface by its MAC. */
  id: string;
  mac: string;
  /**
   * The link's transport:
   * - dgram-unix: frames as datagrams from a Unix socket the VMM binds at `local` to whatever
   *   socket `remote` names when each frame is sent. qvmd points `remote` (a hard link it
   *   places) at the peer's socket, so links are made, moved and restored without the VMM's
   *   help (docs/design.md, "Network links").
   * - stream-unix: a connection to a listening socket (passt's).
   * - tap: a tap device the administrator made (`ip tuntap add dev NAME mode tap`). A jailed VMM
   *   cannot open one: the driver hands it over as an open file descriptor (qvm-tap-open).
   */
  backend: { kind: "dgram-unix"; local: string; remote: string } | { kind: "stream-unix"; path: string } | { kind: "tap"; ifname: string };
}

/** A host PCI device passed through with VFIO (vmm/pci: `qvm pci`). */
export interface PciDeviceSpec {
  id: string;
  kind: "pci";
  /** The device's BDF ("0000:00:14.0"). */
  address: string;
}

/** What an emulated USB device is: a mass-storage stick, a keyboard, a tablet. */
export type UsbDeviceKind = "disk" | "keyboard" | "tablet";

/**
 * An emulated USB device on the VM's own USB controller (`qvm usb plug`, issue 15). A VM whose
 * spec has any at start gets the controller (and only then: see qemu-args.ts); devices can be
 * added to and removed from such a VM while it runs (VmCapabilities.usb).
 */
export interface UsbDeviceSpec {
  /** Stable id within the domain ("usb1"); also the VMM's device id. */
  id: string;
  kind: "usb";
  /**
   * Its port on the VM's USB controller ("1" …, one per id), so that the guest finds a device at
   * the same place at every start and after a hot-plug.
   */
  address: string;
  device: UsbDeviceKind;
  /**
   * disk: the image on the host. The driver opens it itself (as qvmd's user: root), refusing a
   * symbolic link, and hands the VMM the open descriptor; the jailed VMM never opens the path
   * and needs no permission on it.
   */
  image?: string;
  /** disk: opened read-only and shown to the guest as write-protected. */
  readonly?: boolean;
}

/** A device the guest gets from the VMM. */
export type DeviceSpec = PciDeviceSpec | UsbDeviceSpec;

/**
 * An extra vsock or virtio-serial channel (a GUI stream, a clipboard port). Channels over hybrid
 * vsock need no VMM change; this is room for ones that do. None are made yet (issue 14).
 */
export interface ChannelSpec {
  id: string;
  kind: "vsock-port";
  port: number;
}

export interface VmSpec {
  /** Domain name; already validated by the caller (it is used in paths and process titles). */
  name: string;
  /** Per-domain runtime directory: sockets, pid files, overlays. Removed at stop. */
  runtimeDir: string;
  /** Kept after stop for diagnosis: console.log (serial console), vmm.log, vsock.log. */
  logDir: string;
  /** The kernel to boot (an uncompressed ELF vmlinux with a PVH entry, or a bzImage) and its initramfs. */
  kernel: { image: string; initrd: string };
  /** Extra kernel command line arguments after qvm's own. */
  kernelArgs?: string[];
  disks: DiskSpec[];
  memoryMiB: number;
  vcpus: number;
  /** vsock context id of the guest (>= 3). */
  guestCid: number;
  /**
   * The unprivileged identity the domain's VMM processes run as (qvmd allocates one per domain).
   * Absent: the VMM runs as qvmd's own user, unjailed (tests of the driver alone; a non-root qvmd).
   */
  user?: VmmUser;
  /** Network links, in guest order; a driver that cannot make one refuses at prepare. */
  nics?: NicSpec[];
  /** Devices present at boot: passed-through PCI devices, emulated USB devices. */
  devices?: DeviceSpec[];
  channels?: ChannelSpec[];
  /**
   * A directory on disk the VM's snapshot is written to (SnapshotCapability.snapshot), which a
   * jailed VMM can only reach when it is named at start. Only drivers with snapshots use it.
   */
  snapshotDir?: string;
  /**
   * Host paths the VMM may also read (landlock), beyond its disks and their backing files: a
   * snapshot's directory, whose frozen disks become the backing files of the VMs restored from
   * it (their landlock rules are the snapshot's).
   */
  readPaths?: string[];
}

export interface VmmUser {
  uid: number;
  gid: number;
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
  /** Who the VMM runs as when jailed: sockets qvmd makes for it must be theirs. */
  user?: VmmUser;
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
  /** What this VM can do beyond the basics; callers check before use. */
  readonly capabilities: VmCapabilities;
}

/** Adds and removes links and devices while the VM runs. */
export interface HotplugCapability {
  addNic(nic: NicSpec): Promise<void>;
  removeNic(id: string): Promise<void>;
  addDevice(device: DeviceSpec): Promise<void>;
  removeDevice(id: string): Promise<void>;
}

/**
 * Emulated USB devices while the VM runs (`qvm usb plug` on a running domain). Only a VM started
 * with a USB controller can take devices now (`controller`); what it has is kept beside the VMM,
 * so a handle re-attached after a qvmd restart knows it too.
 */
export interface UsbCapability {
  /** True when the VM was started with a USB controller. */
  readonly controller: boolean;
  /** Ids of the emulated USB devices the VM has now (those of its start included). */
  devices(): string[];
  /** Adds one; FAILED_PRECONDITION without a controller; nothing is left behind when it fails. */
  add(device: UsbDeviceSpec): Promise<void>;
  /** Removes one the VM has (a disk's image is closed); NOT_FOUND for one it does not have. */
  remove(id: string): Promise<void>;
}

/** Saves a paused VM to its spec's snapshotDir; the driver's restore starts new VMs from it. */
export interface SnapshotCapability {
  /** Writes the paused VM's state into VmSpec.snapshotDir (FAILED_PRECONDITION without one). */
  snapshot(): Promise<void>;
}

export interface VmCapabilities {
  hotplug?: HotplugCapability;
  snapshot?: SnapshotCapability;
  usb?: UsbCapability;
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
  /**
   * Re-attaches to a VMM left running in runtimeDir, or returns undefined if none is alive there.
   * Every path comes from runtimeDir and logDir, never from what the runtime directory holds.
   */
  attach(runtimeDir: string, logDir: string): Promise<VmHandle | undefined>;
  /** Starts a VM from a snapshot directory, when the driver can (cloud-hypervisor's vm.restore). */
  restore?(spec: VmSpec, snapshotDir: string): Promise<VmHandle>;
}
