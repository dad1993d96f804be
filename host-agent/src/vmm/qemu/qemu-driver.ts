// The QEMU backend: microvm machine, KVM or TCG, guest RAM in a shared memfd, vsock through
// vhost-device-vsock, serial console on a socket and in a log file, control over QMP.
import { execFile } from "node:child_process";
import { mkdirSync, rmSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import type { Accel, PreparedVm, StopOptions, VmCapabilities, VmExit, VmHandle, VmInfo, VmmDriver, VmSpec, VmState } from "../driver.js";
import { hostCgroups, type CgroupHost } from "../sandbox/cgroups.js";
import { canJail, jailRootOf, prepareJail, releaseJail, TCG_TB_SIZE_MIB, type PreparedJail } from "../sandbox/prepare.js";
import { PciHost } from "../pci/sysfs.js";
import { bindToVfio, checkMemlock, makeVfioStandIns, releaseVfio, vfioJailBinds, vfioMemlockBytes, vfioRecordOf, withMemlock } from "../pci/vfio.js";
import { chooseAccel, hostTscKhz, type AccelChoice } from "../accel.js";
import { requireExecutable } from "../host-tools.js";
import { killAndWait, logTail, processAlive, processStartTime, sleep, spawnDetached, waitGone, type SpawnedProcess } from "../process.js";
import { writeJsonAtomic, readJson } from "@qvm/images";
import { buildQemuArgs, diskKeyFds, tapFds, usbDevices, usbDiskFds, withTapFds } from "./qemu-args.js";
import { secretFd } from "../../storage/secret-fd.js";
import { QmpClient, type QmpEvent } from "./qmp.js";
import { checkUsbDevices, closeAll, initialUsbState, openUsbImages, QemuUsb, usbStateSchema } from "./usb.js";
import { startVhostVsock } from "./vhost-vsock.js";

const STATE_FILE = "vmm.json";
const LIVENESS_POLL_MS = 500;

export interface QemuDriverOptions {
  qemuBinary?: string;
  vhostVsockBinary?: string;
  accel?: AccelChoice;
  log?: (msg: string) => void;
  /**
   * Start domains under TCG software emulation, which QEMU does not treat as a security boundary
   * ("users must not rely on QEMU to provide guest isolation" under TCG). Default: QVM_ALLOW_TCG=1.
   */
  allowTcg?: boolean;
  /** Where VMM cgroups are made (default: this host's cgroupfs); false: no cgroup limits. */
  cgroups?: CgroupHost | false;
  /** The host's PCI devices, for VFIO passthrough (default: this host's sysfs). */
  pci?: PciHost;
  /** The qvm-tap-open helper (built by `npm run build`), for tap nics; default $QVM_TAP_OPEN. */
  tapOpenHelper?: string;
  /**
   * The qvm-qmp-add-fd helper (built by `npm run build`), for a USB stick plugged into a running
   * VM; default $QVM_QMP_ADD_FD. Without it such a plug is refused (a halted domain's is not).
   */
  qmpAddFdHelper?: string;
}

export function runtimePaths(runtimeDir: string, logDir: string) {
  return {
    qmpSocket: path.join(runtimeDir, "qmp.sock"),
    /** The second monitor, only for handing QEMU descriptors (qvm-qmp-add-fd). */
    qmpFdSocket: path.join(runtimeDir, "qmp-fd.sock"),
    consoleSocket: path.join(runtimeDir, "console.sock"),
    vhostUserSocket: path.join(runtimeDir, "vhost-user-vsock.sock"),
    vsockPath: path.join(runtimeDir, "vsock.sock"),
    consoleLog: path.join(logDir, "console.log"),
    vmmLog: path.join(logDir, "vmm.log"),
    vsockLog: path.join(logDir, "vsock.log"),
  };
}

const vmmStateSchema = z
  .object({
    vmm: z.literal("qemu"),
    name: z.string(),
    accel: z.enum(["kvm", "tcg"]),
    qemuPid: z.number().int().positive(),
    vhostPid: z.number().int().positive(),
    /** Kernel start times of the two processes (/proc/PID/stat), so a reused pid is not taken for them. */
    qemuStart: z.number().int().nonnegative().optional(),
    vhostStart: z.number().int().nonnegative().optional(),
    /** Informational: a re-attach derives every path from the directory it reads this file from. */
    runtimeDir: z.string(),
    logDir: z.string(),
    /** When jailed: the VMM's identity, its cgroups and the jail's mount point. */
    user: z.object({ uid: z.number().int().positive(), gid: z.number().int().positive() }).strict().optional(),
    cgroupDirs: z.array(z.string().startsWith("/sys/fs/cgroup/")).max(4).optional(),
    /**
     * The emulated USB controller and the devices on it now, when the VM was started with one
     * (usb.ts): a qvmd restarted while the VM runs knows from this whether it takes devices.
     */
    usb: usbStateSchema.optional(),
  })
  .strict();
type VmmState = z.infer<typeof vmmStateSchema>;

export class QemuDriver implements VmmDriver {
  readonly kind = "qemu" as const;
  private readonly log: (msg: string) => void;
  private readonly pci: PciHost;

  constructor(private readonly opts: QemuDriverOptions = {}) {
    this.log = opts.log ?? (() => {});
    this.pci = opts.pci ?? new PciHost();
  }

  private binaries() {
    return {
      qemu: requireExecutable("qemu-system-x86_64", "qemu-system-x86", this.opts.qemuBinary ?? process.env.QVM_QEMU),
      vhost: requireExecutable("vhost-device-vsock", "vhost-device-vsock (Debian sid)", this.opts.vhostVsockBinary ?? process.env.QVM_VHOST_DEVICE_VSOCK),
    };
  }

  async checkHost(): Promise<void> {
    this.binaries();
  }

  /** The helper that hands QEMU its tap devices as descriptors (a jailed VMM cannot open one). */
  private tapHelper(): string {
    const helper = this.opts.tapOpenHelper ?? process.env.QVM_TAP_OPEN;
    if (!helper || !existsSync(helper)) throw new QvmError("MISSING_DEPENDENCY", `${helper ?? "qvm-tap-open"} is missing: run \`npm run build\` (it needs gcc); tap nics need it`);
    return helper;
  }

  /**
   * Opens each tap once (the helper running `true`), so that a missing, wrong or busy device
   * refuses the start with the helper's reason instead of a VMM that exits at once.
   */
  private async checkTaps(name: string, taps: readonly { ifname: string; fd: number }[]): Promise<void> {
    const helper = this.tapHelper();
    for (const t of taps) {
      const why = await new Promise<string | undefined>((resolve) =>
        execFile(helper, [t.ifname, String(t.fd), "--", "true"], { timeout: 5000 }, (err, _out, stderr) => resolve(err ? stderr.trim().replace(/^qvm-tap-open: /, "") || err.message : undefined)),
      );
      if (why !== undefined) throw new QvmError("FAILED_PRECONDITION", `${name}: cannot use tap device ${t.ifname}: ${why}`);
    }
  }

  /** TCG isolates nothing by hardware: refused unless qvmd was told to accept it. */
  private tcgAllowed(): boolean {
    return this.opts.allowTcg ?? process.env.QVM_ALLOW_TCG === "1";
  }

  async prepare(spec: VmSpec): Promise<PreparedVm> {
    const { qemu } = this.binaries();
    // PCI devices pass through with VFIO, USB devices are emulated; extra channels arrive with the issue that makes them (GUI).
    const extra = spec.channels ?? [];
    if (extra.length) throw new QvmError("INVALID_ARGUMENT", `the qemu driver cannot attach ${extra.map((e) => e.id).join(", ")} to ${spec.name} yet`);
    checkUsbDevices(spec.name, usbDevices(spec));
    if (pciAddresses(spec).length) {
      if (!spec.user || !canJail()) {
        throw new QvmError("FAILED_PRECONDITION", `${spec.name} has PCI devices, which only a qvmd running as root can pass through (it binds them to vfio-pci and gives the VMM's uid their VFIO groups)`);
      }
      checkMemlock(spec.name, vfioMemlockBytes(spec.memoryMiB), readFileSync("/proc/self/limits", "utf8"), readFileSync("/proc/self/status", "utf8"));
    }
    for (const f of [spec.kernel.image, spec.kernel.initrd, ...spec.disks.map((d) => d.path)]) {
      if (!existsSync(f)) throw new QvmError("NOT_FOUND", `${f} does not exist: build images with \`./qvm-images build\``);
    }
    const paths = runtimePaths(spec.runtimeDir, spec.logDir);
    const accel = this.opts.accel ?? chooseAccel();
    if (accel.accel === "tcg" && !this.tcgAllowed()) {
      throw new QvmError(
        "FAILED_PRECONDITION",
        `${spec.name} would run under TCG software emulation (${accel.why}), which gives no hardware isolation: a guest that exploits a QEMU bug reaches the host. Use a machine with KVM, or accept the risk: start qvmd with --allow-tcg (or QVM_ALLOW_TCG=1)`,
      );
    }
    const taps = tapFds(spec);
    if (taps.length) await this.checkTaps(spec.name, taps);
    // The sticks' images, opened as they will be at start, so a missing or unusable one refuses
    // the start with the reason (start opens them again: the VMM must get a fresh descriptor).
    closeAll(openUsbImages(spec.name, usbDiskFds(spec)));
    return { spec, accel, command: [qemu, ...buildQemuArgs(spec, accel.accel, paths, hostTscKhz(), TCG_TB_SIZE_MIB)] };
  }

  async start(prepared: PreparedVm): Promise<VmHandle> {
    const { spec, accel } = prepared;
    const { vhost } = this.binaries();
    if (accel.accel === "tcg") this.log(`warning: ${spec.name}: running under TCG software emulation (${accel.why}), allowed by --allow-tcg: no hardware isolation, expect slow domains`);
    if (existsSync(path.join(spec.runtimeDir, STATE_FILE)) && (await this.attach(spec.runtimeDir, spec.logDir))) {
      throw new QvmError("FAILED_PRECONDITION", `a VMM for ${spec.name} is already running in ${spec.runtimeDir}`);
    }
    mkdirSync(spec.runtimeDir, { recursive: true, mode: 0o700 });
    mkdirSync(spec.logDir, { recursive: true, mode: 0o700 });
    const paths = runtimePaths(spec.runtimeDir, spec.logDir);
    const jailed = spec.user !== undefined && canJail();
    if (spec.user && !jailed) this.log(`warning: ${spec.name}: qvmd is not root, so its VMM runs unjailed as qvmd's own user`);
    // PCI devices go to vfio-pci and their group nodes to the VMM's uid before the jail shows them.
    const vfioRecord = vfioRecordOf(spec.runtimeDir, spec.name);
    const vfio = jailed && pciAddresses(spec).length ? await bindToVfio(this.pci, spec.name, pciAddresses(spec), spec.user!, vfioRecord, this.log) : [];
    let jail: PreparedJail | undefined;
    try {
      jail = jailed ? prepareJail(spec, accel.accel, this.opts.cgroups === false ? undefined : (this.opts.cgroups ?? hostCgroups()), vfioJailBinds(this.pci, vfio)) : undefined;
    } catch (err) {
      if (vfio.length) await releaseVfio(this.pci, spec.name, vfioRecord, this.log);
      throw err;
    }
    const wrap = (command: string[]) => (jail ? jail.wrap(command) : command);

    let vhostProc: SpawnedProcess | undefined;
    let qemuProc: SpawnedProcess | undefined;
    // The USB sticks' images and the encrypted disks' keys, opened by qvmd (root) and inherited by QEMU only (qemu-args.ts).
    const sticks = usbDiskFds(spec);
    let inheritedFds: { at: number; fd: number }[] = [];
    try {
      inheritedFds = openUsbImages(spec.name, sticks);
      // Encrypted disks' keys, as memory files owned by the VMM's user (it re-opens them by /proc).
      const owner = jailed ? spec.user : undefined;
      for (const k of diskKeyFds(spec)) inheritedFds.push({ at: k.fd, fd: secretFd(spec.disks[k.index]!.key!.base64(), owner) });
      makeVfioStandIns(this.pci, spec.runtimeDir, vfio);
      vhostProc = await startVhostVsock(vhost, {
        guestCid: spec.guestCid,
        vhostUserSocket: paths.vhostUserSocket,
        udsPath: paths.vsockPath,
        logPath: paths.vsockLog,
        wrap,
      });
      // Only QEMU gets the taps, opened outside its jail; the helper execs, so the pid is QEMU's.
      const taps = tapFds(spec);
      const qemuCommand = taps.length ? withTapFds(this.tapHelper(), taps, wrap(prepared.command)) : wrap(prepared.command);
      // VFIO pins all guest RAM: QEMU's locked-memory limit is raised (as root, before the jail).
      const [file, ...args] = vfio.length ? withMemlock(vfioMemlockBytes(spec.memoryMiB), qemuCommand) : qemuCommand;
      qemuProc = await spawnDetached(file!, args, paths.vmmLog, { inherit: inheritedFds });
      closeAll(inheritedFds.splice(0));
      const usb = initialUsbState(usbDevices(spec), sticks);
      const state: VmmState = {
        vmm: "qemu",
        name: spec.name,
        accel: accel.accel,
        qemuPid: qemuProc.pid,
        vhostPid: vhostProc.pid,
        qemuStart: processStartTime(qemuProc.pid),
        vhostStart: processStartTime(vhostProc.pid),
        runtimeDir: spec.runtimeDir,
        logDir: spec.logDir,
        ...(jail ? { user: spec.user, cgroupDirs: jail.cgroupDirs } : {}),
        ...(usb ? { usb } : {}),
      };
      writeJsonAtomic(path.join(spec.runtimeDir, STATE_FILE), state);
      const vm = new QemuVm(state, qemuProc, this.log, this.pci, this.addFdHelper());
      return vm;
    } catch (err) {
      closeAll(inheritedFds);
      if (qemuProc) await killAndWait(qemuProc.pid, spec.runtimeDir, 0);
      if (vhostProc) await killAndWait(vhostProc.pid, spec.runtimeDir, 0);
      rmSync(spec.runtimeDir, { recursive: true, force: true });
      if (jail) releaseJail(jail.rootDir, jail.cgroupDirs);
      if (vfio.length) await releaseVfio(this.pci, spec.name, vfioRecord, this.log);
      throw err;
    }
  }

  async attach(runtimeDir: string, logDir: string): Promise<VmHandle | undefined> {
    const file = path.join(runtimeDir, STATE_FILE);
    // PCI devices a VMM that is gone (or never started: a crash mid-start) still holds go back to the host.
    const vfioRecord = vfioRecordOf(runtimeDir, path.basename(runtimeDir));
    if (!existsSync(file)) {
      await releaseVfio(this.pci, path.basename(runtimeDir), vfioRecord, this.log);
      return undefined;
    }
    const stored = readJson(file, vmmStateSchema, "remove it once no QEMU for this domain runs");
    // The file is only trusted for pids and facts: every path is the caller's.
    const state: VmmState = { ...stored, name: path.basename(runtimeDir), runtimeDir, logDir };
    if (!processAlive(state.qemuPid, runtimeDir, state.qemuStart)) {
      // The VMM died while nobody watched: clean up what it left.
      await killAndWait(state.vhostPid, runtimeDir, 500, state.vhostStart);
      rmSync(runtimeDir, { recursive: true, force: true });
      releaseJail(jailRootOf(runtimeDir, state.name), state.cgroupDirs ?? []);
      await releaseVfio(this.pci, state.name, vfioRecord, this.log);
      return undefined;
    }
    return new QemuVm(state, undefined, this.log, this.pci, this.addFdHelper());
  }

  /** Finds qvm-qmp-add-fd when a plug needs it (undefined: missing, and the plug says so). */
  private addFdHelper(): () => string | undefined {
    return () => {
      const helper = this.opts.qmpAddFdHelper ?? process.env.QVM_QMP_ADD_FD;
      return helper && existsSync(helper) ? helper : undefined;
    };
  }
}

class QemuVm implements VmHandle {
  readonly exited: Promise<VmExit>;
  // The microvm machine has no PCI hot-plug, and QEMU 7.2 refuses to snapshot a VM with
  // vhost-user-vsock ("non-migratable device"): neither capability is offered. USB devices on
  // the emulated xHCI controller are: on the USB bus, which needs no PCI hot-plug.
  readonly capabilities: VmCapabilities;
  private resolveExited!: (e: VmExit) => void;
  private qmp: QmpClient | undefined;
  private qmpConnecting: Promise<QmpClient> | undefined;
  private lastShutdown: QmpEvent | undefined;
  private stopRequested = false;
  private done = false;
  private detached = false;
  private poll: NodeJS.Timeout | undefined;
  private readonly paths: ReturnType<typeof runtimePaths>;

  constructor(
    private readonly state: VmmState,
    own: SpawnedProcess | undefined,
    private readonly log: (msg: string) => void,
    private readonly pci: PciHost,
    addFdHelper: () => string | undefined,
  ) {
    this.paths = runtimePaths(state.runtimeDir, state.logDir);
    this.exited = new Promise((r) => (this.resolveExited = r));
    this.capabilities = {
      usb: new QemuUsb({
        name: state.name,
        qemuPid: state.qemuPid,
        state: state.usb,
        qmp: () => {
          if (!this.isAlive()) return Promise.reject(this.deadError());
          // A frozen QEMU (pause) answers nothing: say so instead of waiting.
          if (processStopped(state.qemuPid)) return Promise.reject(new QvmError("FAILED_PRECONDITION", `${state.name} is paused: unpause it first`));
          return this.connectQmp(2000);
        },
        qmpFdSocket: this.paths.qmpFdSocket,
        addFdHelper,
        save: () => writeJsonAtomic(path.join(state.runtimeDir, STATE_FILE), state),
        log,
      }),
    };
    if (own) {
      void own.exited.then((st) => this.onGone(st));
    } else {
      // Not our child: we cannot wait() for it, so poll.
      this.poll = setInterval(() => {
        if (!processAlive(state.qemuPid, state.runtimeDir, state.qemuStart)) void this.onGone(undefined);
      }, LIVENESS_POLL_MS);
    }
  }

  get name(): string {
    return this.state.name;
  }
  get runtimeDir(): string {
    return this.state.runtimeDir;
  }

  isAlive(): boolean {
    return !this.done && processAlive(this.state.qemuPid, this.state.runtimeDir, this.state.qemuStart);
  }

  private connectQmp(timeoutMs: number): Promise<QmpClient> {
    if (this.qmp) return Promise.resolve(this.qmp);
    this.qmpConnecting ??= (async () => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (this.done) throw this.deadError();
        try {
          const qmp = await QmpClient.connect(this.paths.qmpSocket);
          qmp.on("event", (ev) => {
            if (ev.event === "SHUTDOWN") this.lastShutdown = ev;
          });
          qmp.on("close", () => {
            this.qmp = undefined;
            this.qmpConnecting = undefined;
            // QEMU closes QMP only when it exits: check now rather than at the next poll.
            setTimeout(() => {
              if (!processAlive(this.state.qemuPid, this.state.runtimeDir, this.state.qemuStart)) void this.onGone(undefined);
            }, 20);
          });
          this.qmp = qmp;
          return qmp;
        } catch (err) {
          if (Date.now() > deadline) {
            throw new QvmError("VMM_FAILED", `QEMU for ${this.name} did not open its control socket; see ${this.paths.vmmLog}`, { cause: err });
          }
          await sleep(25);
        }
      }
    })().finally(() => (this.qmpConnecting = undefined));
    return this.qmpConnecting;
  }

  private deadError(): QvmError {
    return new QvmError("VMM_FAILED", `QEMU for ${this.name} exited; see ${this.paths.vmmLog} and ${this.paths.consoleLog}`);
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const qmp = await this.connectQmp(timeoutMs);
    await qmp.execute("query-status");
  }

  async info(): Promise<VmInfo> {
    let state: VmState = "stopped";
    if (this.isAlive()) state = processStopped(this.state.qemuPid) ? "paused" : "running";
    return {
      vmm: "qemu",
      accel: this.state.accel as Accel,
      state,
      pid: this.state.qemuPid,
      vsockPath: this.paths.vsockPath,
      consoleSocket: this.paths.consoleSocket,
      consoleLogPath: this.paths.consoleLog,
      user: this.state.user,
    };
  }

  // Pause freezes the QEMU process instead of QMP `stop`: `stop` halts the vhost-user rings, and
  // vhost-device-vsock 0.3 then wedges every vsock connection of the VM, new ones included, if
  // the host sent anything meanwhile (seen in tests). A frozen process keeps the rings intact;
  // the guest clock jumps forward on resume, as after a host suspend.
  async pause(): Promise<void> {
    if (!this.isAlive()) throw this.deadError();
    process.kill(this.state.qemuPid, "SIGSTOP");
    await this.waitStopped(true);
  }

  /** Signals are delivered asynchronously: wait until /proc shows the new state. */
  private async waitStopped(stopped: boolean): Promise<void> {
    for (let i = 0; i < 200 && processStopped(this.state.qemuPid) !== stopped; i++) await sleep(10);
    if (processStopped(this.state.qemuPid) !== stopped) {
      throw new QvmError("VMM_FAILED", `QEMU for ${this.name} did not ${stopped ? "pause" : "resume"}`);
    }
  }

  async resume(): Promise<void> {
    if (!this.isAlive()) throw this.deadError();
    process.kill(this.state.qemuPid, "SIGCONT");
    await this.waitStopped(false);
  }

  async stop(opts: StopOptions = {}): Promise<VmExit> {
    if (this.done) return this.exited;
    if (this.detached) throw new QvmError("FAILED_PRECONDITION", `this handle of ${this.name} was detached; attach again to stop it`);
    this.stopRequested = true;
    if (processStopped(this.state.qemuPid)) process.kill(this.state.qemuPid, "SIGCONT"); // a paused guest cannot see the power button
    if (!opts.force) {
      try {
        const qmp = await this.connectQmp(2000);
        await qmp.execute("system_powerdown");
        const gone = await Promise.race([this.exited.then(() => true), sleep(opts.timeoutMs ?? 10_000).then(() => false)]);
        if (gone) return this.exited;
        this.log(`${this.name}: no clean poweroff in time; killing the VMM`);
      } catch {
        // QMP unavailable: fall through to the kill.
      }
    }
    try {
      process.kill(this.state.qemuPid, "SIGKILL");
    } catch {
      // already gone
    }
    if (!this.poll && !(await waitGone(this.state.qemuPid, this.state.runtimeDir, 5000, this.state.qemuStart))) {
      throw new QvmError("VMM_FAILED", `QEMU pid ${this.state.qemuPid} did not die after SIGKILL`);
    }
    if (this.poll) void this.onGone(undefined);
    return this.exited;
  }

  async resizeDisk(index: number, sizeBytes: number): Promise<void> {
    if (!this.isAlive()) throw this.deadError();
    const qmp = await this.connectQmp(2000);
    // The drive ids are disk<N> in the order of VmSpec.disks (qemu-args.ts).
    await qmp.execute("block_resize", { device: `disk${index}`, size: sizeBytes });
  }

  detach(): void {
    this.detached = true;
    if (this.poll) clearInterval(this.poll);
    this.qmp?.close();
  }

  private async onGone(st: { code: number | null; signal: NodeJS.Signals | null } | undefined): Promise<void> {
    // A detached handle no longer owns the VM: whoever attaches next cleans up after it.
    if (this.done || this.detached) return;
    this.done = true;
    if (this.poll) clearInterval(this.poll);
    this.qmp?.close();
    await killAndWait(this.state.vhostPid, this.state.runtimeDir, 1000, this.state.vhostStart);
    rmSync(this.state.runtimeDir, { recursive: true, force: true });
    releaseJail(jailRootOf(this.state.runtimeDir, this.state.name), this.state.cgroupDirs ?? []);
    await releaseVfio(this.pci, this.state.name, vfioRecordOf(this.state.runtimeDir, this.state.name), this.log);
    this.resolveExited(this.describeExit(st));
  }

  private describeExit(st: { code: number | null; signal: NodeJS.Signals | null } | undefined): VmExit {
    const reason = this.lastShutdown?.data?.reason;
    if (reason === "guest-shutdown") return { reason: "the guest powered off", clean: true };
    if (reason === "guest-reset") return { reason: "the guest rebooted or its kernel panicked", clean: this.stopRequested };
    if (reason === "guest-panic") return { reason: `the guest kernel panicked; see ${this.paths.consoleLog}`, clean: false };
    if (reason === "host-qmp-quit" || reason === "host-signal") return { reason: "stopped by the host", clean: true };
    if (this.stopRequested) return { reason: "killed on request", clean: true };
    if (st?.signal) return { reason: `the VMM was killed by ${st.signal}`, clean: false };
    if (st && st.code !== 0) return { reason: `the VMM exited with code ${st.code}: ${logTail(this.paths.vmmLog)}`, clean: false };
    return { reason: `the VMM process exited unexpectedly; see ${this.paths.vmmLog}`, clean: false };
  }
}

/** The BDFs of the spec's PCI devices. */
function pciAddresses(spec: VmSpec): string[] {
  return (spec.devices ?? []).filter((d) => d.kind === "pci").map((d) => d.address);
}

/** True when the process is frozen by SIGSTOP (state T in /proc/PID/stat). */
function processStopped(pid: number): boolean {
  try {
    return /\) T /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
