// The cloud-hypervisor backend (issue 17): one CH process per domain, started with only its API
// socket and event monitor, then driven over the REST API (vm.create, vm.boot, …). CH's own
// hybrid vsock takes vhost-device-vsock's place on the same socket path, so the agent relay, the
// qrexec listener and the Exec data channels work unchanged. seccomp and landlock are on; the
// process runs in the same jail as QEMU domains (unprivileged uid, cgroups, private mount view),
// with the domain's files at fixed paths (view.ts) so snapshots restore as other domains.
//
// Not yet run against a real cloud-hypervisor binary: these machines have none and their KVM runs
// only PVM guests. It is tested against a fake that answers as CH's API documents
// (testing/fake-cloud-hypervisor.mjs) and its request bodies against CH's OpenAPI description.
import { chownSync, existsSync, mkdirSync, openSync, closeSync, rmSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { readJson, writeJsonAtomic } from "@qvm/images";
import type { NicSpec, DeviceSpec, PreparedVm, StopOptions, VmCapabilities, VmExit, VmHandle, VmInfo, VmmDriver, VmSpec, VmState } from "../driver.js";
import { chooseAccel, type AccelChoice } from "../accel.js";
import { requireExecutable } from "../host-tools.js";
import { killAndWait, logTail, processAlive, processStartTime, sleep, spawnDetached, type SpawnedProcess } from "../process.js";
import { hostCgroups, type CgroupHost } from "../sandbox/cgroups.js";
import { canJail, jailRootOf, prepareJail, releaseJail, type PreparedJail } from "../sandbox/prepare.js";
import type { JailBind } from "../sandbox/jail.js";
import { ChApi, type ChVmState } from "./ch-api.js";
import { ChEventFile, type ChEvent } from "./events.js";
import { buildVmConfig, netConfig } from "./vm-config.js";
import { chFiles, fixedView, hostView, SNAPSHOT_VIEW, viewMap, type ChView } from "./view.js";

export const CH_KIND = "cloud-hypervisor";
const STATE_FILE = "ch.json";
const POLL_MS = 500;
/** How long CH may take to open its API socket. */
const API_READY_MS = 10_000;
export const CH_INSTALL_HINT =
  "cloud-hypervisor is not packaged by Debian: install the static binary from its GitHub releases (cloud-hypervisor-static) as /usr/local/bin/cloud-hypervisor, or set QVM_CLOUD_HYPERVISOR to its path; it needs hardware KVM";

export interface ChDriverOptions {
  /** The binary (default: $QVM_CLOUD_HYPERVISOR, else cloud-hypervisor on PATH). */
  binary?: string;
  accel?: AccelChoice;
  log?: (msg: string) => void;
  cgroups?: CgroupHost | false;
  /** Environment for the VMM process (tests give the fake its knobs). */
  env?: NodeJS.ProcessEnv;
}

const stateSchema = z
  .object({
    vmm: z.literal(CH_KIND),
    name: z.string(),
    pid: z.number().int().positive(),
    start: z.number().int().nonnegative().optional(),
    /** Jailed: the VMM sees the fixed view (its command line names /vm/run, not this directory). */
    jailed: z.boolean(),
    runtimeDir: z.string(),
    logDir: z.string(),
    user: z.object({ uid: z.number().int().positive(), gid: z.number().int().positive() }).strict().optional(),
    cgroupDirs: z.array(z.string().startsWith("/sys/fs/cgroup/")).max(4).optional(),
    /** Tap links hot-plugged since start, so a re-attached handle knows them. */
    nics: z.array(z.string().max(64)).max(64).optional(),
    /** VmSpec.snapshotDir: where snapshot() writes (shown to a jailed VMM at SNAPSHOT_VIEW). */
    snapshotDir: z.string().optional(),
  })
  .strict();
type ChState = z.infer<typeof stateSchema>;

/** The argument qvmd finds the VMM by in /proc/PID/cmdline (with its start time against pid reuse). */
function cmdlineMarker(st: Pick<ChState, "jailed" | "runtimeDir" | "logDir">): string {
  const view = st.jailed ? fixedView({ disks: [] } as unknown as VmSpec) : { runtimeDir: st.runtimeDir, logDir: st.logDir };
  return `path=${chFiles(view).apiSocket}`;
}

export class CloudHypervisorDriver implements VmmDriver {
  readonly kind = CH_KIND;
  private readonly log: (msg: string) => void;

  constructor(private readonly opts: ChDriverOptions = {}) {
    this.log = opts.log ?? (() => {});
  }

  private binary(): string {
    const override = this.opts.binary ?? process.env.QVM_CLOUD_HYPERVISOR;
    try {
      return requireExecutable("cloud-hypervisor", "none", override);
    } catch (err) {
      if (err instanceof QvmError && err.code === "MISSING_DEPENDENCY") throw new QvmError("MISSING_DEPENDENCY", `${override ?? "cloud-hypervisor"} not found: ${CH_INSTALL_HINT}`);
      throw err;
    }
  }

  async checkHost(): Promise<void> {
    this.binary();
    const accel = this.opts.accel ?? chooseAccel();
    if (accel.accel !== "kvm") throw new QvmError("FAILED_PRECONDITION", `cloud-hypervisor needs hardware KVM, and this host has none (${accel.why}); use \`qvm prefs DOMAIN vmm qemu\``);
  }

  async prepare(spec: VmSpec): Promise<PreparedVm> {
    await this.checkHost();
    for (const f of [spec.kernel.image, spec.kernel.initrd, ...spec.disks.map((d) => d.path)]) {
      if (!existsSync(f)) throw new QvmError("NOT_FOUND", `${f} does not exist: build images with \`./qvm-images build\``);
    }
    const view = this.viewOf(spec);
    buildVmConfig(spec, view); // refuses what CH cannot carry, before anything starts
    return { spec, accel: { accel: "kvm", why: "cloud-hypervisor runs on KVM only" }, command: [this.binary(), ...chArgs(view)] };
  }

  private jailed(spec: VmSpec): boolean {
    return spec.user !== undefined && canJail();
  }

  private viewOf(spec: VmSpec): ChView {
    return this.jailed(spec) ? fixedView(spec) : hostView(spec);
  }

  async start(prepared: PreparedVm): Promise<VmHandle> {
    return this.launch(prepared.spec, prepared.command, async (api, spec, view) => {
      await api.create(buildVmConfig(spec, view));
      await api.boot();
    });
  }

  /**
   * A VM from a snapshot directory (vm.snapshot of a paused VM): restored paused, then resumed.
   * The snapshot names the fixed view's paths, which this domain's jail maps to its own files, so
   * the spec's disks must hold what the snapshot's disks held (copies or overlays of them).
   */
  async restore(spec: VmSpec, snapshotDir: string): Promise<VmHandle> {
    if (!this.jailed(spec)) throw new QvmError("FAILED_PRECONDITION", `${spec.name}: restoring a cloud-hypervisor snapshot needs the VMM jail (a qvmd running as root), which maps the snapshot's paths to this domain's files`);
    if (!existsSync(path.join(snapshotDir, "config.json"))) throw new QvmError("NOT_FOUND", `${snapshotDir} holds no cloud-hypervisor snapshot (no config.json)`);
    const prepared = await this.prepare(spec);
    return this.launch({ ...spec, snapshotDir: undefined }, prepared.command, async (api) => {
      await api.restore(SNAPSHOT_VIEW, { resume: false });
      await api.resume();
    }, { path: SNAPSHOT_VIEW, from: snapshotDir, mode: "ro" });
  }

  private async launch(spec: VmSpec, command: string[], boot: (api: ChApi, spec: VmSpec, view: ChView) => Promise<void>, snapshotBind?: JailBind): Promise<VmHandle> {
    if (existsSync(path.join(spec.runtimeDir, STATE_FILE)) && (await this.attach(spec.runtimeDir, spec.logDir))) {
      throw new QvmError("FAILED_PRECONDITION", `a VMM for ${spec.name} is already running in ${spec.runtimeDir}`);
    }
    mkdirSync(spec.runtimeDir, { recursive: true, mode: 0o700 });
    mkdirSync(spec.logDir, { recursive: true, mode: 0o700 });
    const jailed = this.jailed(spec);
    if (spec.user && !jailed) this.log(`warning: ${spec.name}: qvmd is not root, so its VMM runs unjailed as qvmd's own user`);
    const view = jailed ? fixedView(spec) : hostView(spec);
    const host = chFiles(spec);
    // A fresh event file: the offset qvmd reads from starts at 0 for this VMM.
    rmSync(host.events, { force: true });
    closeSync(openSync(host.events, "a", 0o600));
    let jail: PreparedJail | undefined;
    const binary = command[0]!;
    if (jailed) {
      const devices: JailBind[] = [];
      if (snapshotBind) devices.push(snapshotBind);
      else if (spec.snapshotDir) {
        // The VMM (its uid) writes the snapshot: the directory is its, and shown at SNAPSHOT_VIEW.
        mkdirSync(spec.snapshotDir, { recursive: true, mode: 0o700 });
        chownSync(spec.snapshotDir, spec.user!.uid, spec.user!.gid);
        devices.push({ path: SNAPSHOT_VIEW, from: spec.snapshotDir, mode: "rw" });
      }
      if (!binary.startsWith("/usr/")) devices.push({ path: binary, mode: "ro" });
      if ((spec.nics ?? []).length) devices.push({ path: "/dev/net/tun", mode: "dev" });
      jail = prepareJail(spec, "kvm", this.opts.cgroups === false ? undefined : (this.opts.cgroups ?? hostCgroups()), devices, viewMap(spec, view));
    }
    let proc: SpawnedProcess | undefined;
    try {
      const [file, ...args] = jail ? jail.wrap(command) : command;
      proc = await spawnDetached(file!, args, path.join(spec.logDir, "vmm.log"), { env: this.opts.env });
      const state: ChState = {
        vmm: CH_KIND,
        name: spec.name,
        pid: proc.pid,
        start: processStartTime(proc.pid),
        jailed,
        runtimeDir: spec.runtimeDir,
        logDir: spec.logDir,
        ...(jail ? { user: spec.user, cgroupDirs: jail.cgroupDirs } : {}),
        nics: (spec.nics ?? []).map((n) => n.id),
        ...(spec.snapshotDir ? { snapshotDir: spec.snapshotDir } : {}),
      };
      writeJsonAtomic(path.join(spec.runtimeDir, STATE_FILE), state);
      const vm = new ChVm(state, proc, this.log);
      await vm.waitReady(API_READY_MS);
      await boot(vm.api, spec, view);
      return vm;
    } catch (err) {
      if (proc) await killAndWait(proc.pid, undefined, 0);
      rmSync(spec.runtimeDir, { recursive: true, force: true });
      if (jail) releaseJail(jail.rootDir, jail.cgroupDirs);
      throw err;
    }
  }

  async attach(runtimeDir: string, logDir: string): Promise<VmHandle | undefined> {
    const file = path.join(runtimeDir, STATE_FILE);
    if (!existsSync(file)) return undefined;
    const stored = readJson(file, stateSchema, "remove it once no cloud-hypervisor for this domain runs");
    // The file is only trusted for pids and facts: every path is the caller's.
    const state: ChState = { ...stored, name: path.basename(runtimeDir), runtimeDir, logDir };
    if (!processAlive(state.pid, cmdlineMarker(state), state.start)) {
      rmSync(runtimeDir, { recursive: true, force: true });
      releaseJail(jailRootOf(runtimeDir, state.name), state.cgroupDirs ?? []);
      return undefined;
    }
    return new ChVm(state, undefined, this.log);
  }
}


/** CH's command line: the API socket and the event monitor only; the VM comes through vm.create. */
export function chArgs(view: Pick<ChView, "runtimeDir" | "logDir">): string[] {
  const f = chFiles(view);
  return ["--api-socket", `path=${f.apiSocket}`, "--event-monitor", `path=${f.events}`, "--seccomp", "true"];
}

class ChVm implements VmHandle {
  readonly exited: Promise<VmExit>;
  readonly capabilities: VmCapabilities;
  readonly api: ChApi;
  private resolveExited!: (e: VmExit) => void;
  private readonly events: ChEventFile;
  private lastEvents: ChEvent[] = [];
  private stopRequested = false;
  private done = false;
  private detached = false;
  private readonly poll: NodeJS.Timeout;
  private readonly files: ReturnType<typeof chFiles>;

  constructor(
    private readonly state: ChState,
    own: SpawnedProcess | undefined,
    private readonly log: (msg: string) => void,
  ) {
    this.files = chFiles(state);
    this.api = new ChApi(this.files.apiSocket);
    this.events = new ChEventFile(this.files.events);
    this.exited = new Promise((r) => (this.resolveExited = r));
    const nics = new Set(state.nics ?? []);
    const save = () => writeJsonAtomic(path.join(state.runtimeDir, STATE_FILE), { ...state, nics: [...nics] });
    this.capabilities = {
      snapshot: {
        snapshot: async () => {
          this.checkAlive();
          if (!state.snapshotDir) throw new QvmError("FAILED_PRECONDITION", `${state.name} was started without a snapshot directory`);
          await this.api.snapshot(state.jailed ? SNAPSHOT_VIEW : state.snapshotDir);
        },
      },
      hotplug: {
        addNic: async (nic: NicSpec) => {
          this.checkAlive();
          if (nics.has(nic.id)) throw new QvmError("ALREADY_EXISTS", `${state.name} already has a link ${nic.id}`);
          await this.api.addNet(netConfig(state.name, nic));
          nics.add(nic.id);
          save();
        },
        removeNic: async (id: string) => {
          this.checkAlive();
          if (!nics.has(id)) throw new QvmError("NOT_FOUND", `${state.name} has no link ${id}`);
          await this.api.removeDevice(id);
          nics.delete(id);
          save();
        },
        addDevice: async (d: DeviceSpec) => {
          throw new QvmError("FAILED_PRECONDITION", `${state.name}: the cloud-hypervisor driver cannot add ${d.kind} devices yet; use \`qvm prefs ${state.name} vmm qemu\``);
        },
        removeDevice: async (id: string) => {
          throw new QvmError("NOT_FOUND", `${state.name} has no device ${id} (the cloud-hypervisor driver adds none)`);
        },
      },
    };
    if (own) void own.exited.then((st) => this.onGone(st));
    // Events and liveness (a VMM that is not our child cannot be waited for).
    this.poll = setInterval(() => this.tick(), POLL_MS);
    this.poll.unref();
  }

  get name(): string {
    return this.state.name;
  }
  get runtimeDir(): string {
    return this.state.runtimeDir;
  }

  private tick(): void {
    for (const ev of this.events.poll()) {
      this.lastEvents.push(ev);
      if (this.lastEvents.length > 32) this.lastEvents.shift();
      // The guest powered off: CH's VM is shut down; end the VMM too, as QEMU ends with its guest.
      if (ev.source === "vm" && ev.event === "shutdown") void this.api.shutdownVmm().catch(() => {});
    }
    if (!processAlive(this.state.pid, cmdlineMarker(this.state), this.state.start)) void this.onGone(undefined);
  }

  isAlive(): boolean {
    return !this.done && processAlive(this.state.pid, cmdlineMarker(this.state), this.state.start);
  }

  private checkAlive(): void {
    if (!this.isAlive()) throw this.deadError();
  }

  private deadError(): QvmError {
    return new QvmError("VMM_FAILED", `cloud-hypervisor for ${this.name} exited; see ${path.join(this.state.logDir, "vmm.log")}`);
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.done) throw this.deadError();
      try {
        await this.api.ping();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new QvmError("VMM_FAILED", `cloud-hypervisor for ${this.name} did not open its API socket; see ${path.join(this.state.logDir, "vmm.log")}`, { cause: err });
        await sleep(25);
      }
    }
  }

  async info(): Promise<VmInfo> {
    let state: VmState = "stopped";
    if (this.isAlive()) state = vmState((await this.api.info()).state);
    return {
      vmm: CH_KIND,
      accel: "kvm",
      state,
      pid: this.state.pid,
      vsockPath: this.files.vsockSocket,
      consoleSocket: this.files.consoleSocket,
      consoleLogPath: path.join(this.state.logDir, "vmm.log"),
      user: this.state.user,
    };
  }

  async pause(): Promise<void> {
    this.checkAlive();
    await this.api.pause();
  }

  async resume(): Promise<void> {
    this.checkAlive();
    await this.api.resume();
  }

  async stop(opts: StopOptions = {}): Promise<VmExit> {
    if (this.done) return this.exited;
    if (this.detached) throw new QvmError("FAILED_PRECONDITION", `this handle of ${this.name} was detached; attach again to stop it`);
    this.stopRequested = true;
    if (!opts.force) {
      try {
        // A paused guest cannot see the power button.
        if ((await this.api.info()).state === "Paused") await this.api.resume();
        await this.api.powerButton();
        const gone = await Promise.race([this.exited.then(() => true), sleep(opts.timeoutMs ?? 10_000).then(() => false)]);
        if (gone) return this.exited;
        this.log(`${this.name}: no clean poweroff in time; killing the VMM`);
      } catch {
        // API unavailable: fall through to the kill.
      }
    }
    try {
      process.kill(this.state.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await this.waitGoneOrFail();
    return this.exited;
  }

  private async waitGoneOrFail(): Promise<void> {
    for (let i = 0; i < 100 && this.isAliveRaw(); i++) await sleep(50);
    if (this.isAliveRaw()) throw new QvmError("VMM_FAILED", `cloud-hypervisor pid ${this.state.pid} did not die after SIGKILL`);
    void this.onGone(undefined);
  }

  private isAliveRaw(): boolean {
    return processAlive(this.state.pid, cmdlineMarker(this.state), this.state.start);
  }

  async resizeDisk(index: number, sizeBytes: number): Promise<void> {
    this.checkAlive();
    // Disk ids are disk<N> in the order of VmSpec.disks (vm-config.ts).
    await this.api.resizeDisk(`disk${index}`, sizeBytes);
  }

  detach(): void {
    this.detached = true;
    clearInterval(this.poll);
  }

  private async onGone(st: { code: number | null; signal: NodeJS.Signals | null } | undefined): Promise<void> {
    if (this.done || this.detached) return;
    this.done = true;
    clearInterval(this.poll);
    for (const ev of this.events.poll()) this.lastEvents.push(ev);
    rmSync(this.state.runtimeDir, { recursive: true, force: true });
    releaseJail(jailRootOf(this.state.runtimeDir, this.state.name), this.state.cgroupDirs ?? []);
    this.resolveExited(this.describeExit(st));
  }

  private describeExit(st: { code: number | null; signal: NodeJS.Signals | null } | undefined): VmExit {
    const seen = (source: string, event: string) => this.lastEvents.some((e) => e.source === source && e.event === event);
    const vmmLog = path.join(this.state.logDir, "vmm.log");
    if (seen("guest", "panic")) return { reason: `the guest kernel panicked; see ${vmmLog}`, clean: false };
    if (this.stopRequested) return { reason: seen("vm", "shutdown") ? "the guest powered off" : "killed on request", clean: true };
    if (seen("vm", "shutdown")) return { reason: "the guest powered off", clean: true };
    if (seen("vm", "rebooting") || seen("vm", "rebooted")) return { reason: "the guest rebooted", clean: false };
    if (st?.signal) return { reason: `the VMM was killed by ${st.signal}`, clean: false };
    if (st && st.code !== 0) return { reason: `the VMM exited with code ${st.code}: ${logTail(vmmLog)}`, clean: false };
    return { reason: `the VMM process exited unexpectedly; see ${vmmLog}`, clean: false };
  }
}

function vmState(s: ChVmState): VmState {
  if (s === "Running") return "running";
  if (s === "Paused" || s === "BreakPoint") return "paused";
  return "stopped";
}
