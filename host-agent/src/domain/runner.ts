// Running domains: the power-state machine (Halted, Transient, Running, Paused, Halting), start
// with the domains a plan depends on, shutdown, kill, pause, and taking VMs back after a qvmd
// restart. Per-domain calls are serialized by the shared KeyedMutex. A VM that dies is noticed
// through its exit promise and its domain becomes Halted with the reason. What a start needs
// comes from the BootPlanner; VMs come from a VmFactory; attachments are made by the attachers
// and released on every exit path. A start is admitted first (admission.ts): the number of
// running domains, their memory and the data disk's room for their overlays stay within limits.
import { QvmError } from "@qvm/protocol";
import type { PowerStateWord } from "@qvm/protocol/contracts";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import type { EventBus } from "../base/events.js";
import { validateDomainName } from "../model/names.js";
import type { DomainRecord } from "../model/domain.js";
import { checkAdmission, defaultLimits, type ResourceLimits } from "./admission.js";
import type { Attacher } from "./attachments.js";
import type { BootPlan } from "./boot-plan.js";
import type { DomainPaths } from "./paths.js";
import { PRELOAD_MAX, markedAsPreload } from "./preload-marks.js";
import type { DomainRegistry } from "./registry.js";
import type { RunningVm, VmFactory } from "./vm-factory.js";
import type { DiskKey, VmInfo } from "../vmm/driver.js";
import type { VolumeKey } from "../storage/volume-key.js";

/** The private volume's place in the disks a plan prepares (root is 0). */
const PRIVATE_DISK_INDEX = 1;
/** Lock key under which starts are admitted one at a time (not a valid domain name). */
const ADMISSION_LOCK = "@admission";


/** Storage work around a run: what stopping commits and discards, what a start may still owe the guest. */
export interface RunStorage {
  /** A stopped TemplateVM's or StandaloneVM's root changes become its root; failures are logged. */
  commitRoot(name: string): Promise<void>;
  /** A stopped domain's volatile overlays are removed; failures are logged. */
  discardVolatile(name: string): void;
  /** Work for a halted domain's next start, in the background (an encrypted AppVM's root overlay); failures are logged. */
  prepareNextStart(name: string): void;
  /** How far a running domain's overlays may still grow, in bytes. */
  overlayGrowth(name: string): Promise<number>;
  /** Free bytes on the data disk. */
  freeBytes(): number;
  /** Refuses a resize that is not a growth or does not fit. */
  checkGrow(name: string, sizeBytes: number): Promise<void>;
  /** The private volume grew while the domain was halted: its filesystem must grow at start. */
  growPending(name: string): boolean;
  growDone(name: string): void;
}

export interface RunnerDeps {
  registry: DomainRegistry;
  planner: { plan(rec: DomainRecord): BootPlan };
  vms: VmFactory;
  storage: RunStorage;
  /** Run for every domain taken on (started or re-attached); each result is owned by the domain. */
  attachers: readonly Attacher[];
  events: EventBus;
  locks: KeyedMutex;
  paths: DomainPaths;
  log: (msg: string) => void;
  /** What may run at once; defaults: defaultLimits(). */
  limits?: ResourceLimits;
}

interface Live {
  vm: RunningVm;
  pid: number;
  paused: boolean;
  halting: boolean;
  /** Guest memory it was started with (MiB), for the admission of later starts. */
  memoryMiB: number;
  /** What it runs under: "kvm" or "tcg". */
  accel: string;
  /**
   * An encrypted domain's keys, held while it runs and wiped when it stops: its private volume's
   * (a backup of it while it runs reads a revision through it) and its volatile root's. Never
   * held for a domain re-attached after a qvmd restart (qvmd never stores them).
   */
  privateKey?: VolumeKey;
  diskKeys: DiskKey[];
}

export interface StartOptions {
  /** An encrypted domain's passphrase; without it such a start fails with PASSPHRASE_REQUIRED. */
  passphrase?: string;
}

/** A start admitted and not yet running: what admission counts for it meanwhile. */
interface Reservation {
  memoryMiB: number;
  growthBytes: number;
}

export class DomainRunner {
  private readonly live = new Map<string, Live>();
  private readonly starting = new Set<string>();
  private readonly lastStop = new Map<string, string>();
  private readonly reserved = new Map<string, Reservation>();
  readonly limits: ResourceLimits;

  constructor(private readonly deps: RunnerDeps) {
    this.limits = deps.limits ?? defaultLimits();
  }

  /** Qubes' power state (Transient: starting). */
  state(name: string): PowerStateWord {
    if (this.starting.has(name)) return "Transient";
    const l = this.live.get(name);
    if (!l) return "Halted";
    if (l.halting) return "Halting";
    return l.paused ? "Paused" : "Running";
  }

  isRunning(name: string): boolean {
    return this.starting.has(name) || this.live.has(name);
  }

  vmmPid(name: string): number {
    return this.live.get(name)?.pid ?? 0;
  }

  /** "kvm" or "tcg" while running (tcg: no hardware isolation); "" when halted. */
  accel(name: string): string {
    return this.live.get(name)?.accel ?? "";
  }

  lastStopReason(name: string): string {
    return this.lastStop.get(name) ?? "";
  }

  runningNames(): string[] {
    return [...this.live.keys()];
  }

  /** What is attached to a running domain ("holder:name"); [] when it is not running. */
  attachmentsOf(name: string): string[] {
    return this.live.get(name)?.vm.attachments.held() ?? [];
  }

  /** After a qvmd restart: takes back every VM still running; cleans up after dead or orphaned ones. */
  async reattachAll(): Promise<void> {
    for (const { name, dir } of this.deps.paths.runtimeEntries()) {
      let vm: RunningVm | undefined;
      try {
        validateDomainName(name);
        vm = await this.deps.vms.reattach(name, dir);
      } catch (err) {
        this.deps.log(`cannot re-attach ${JSON.stringify(name)}: ${(err as Error).message}`);
        continue;
      }
      if (!vm) {
        this.lastStop.set(name, "the VMM exited while qvmd was not running");
        continue;
      }
      if (!this.deps.registry.store.get(name)) {
        this.deps.log(`${name}: VMM running for a domain that no longer exists; killing it`);
        await vm.kill().catch(() => {});
        continue;
      }
      const info = await vm.info();
      const rec = this.deps.registry.store.get(name)!;
      await this.adopt(name, vm, info, true, Number(this.deps.registry.resolve(rec, "memory")));
      this.deps.log(`${name}: re-attached to the running VMM (pid ${info.pid})`);
    }
  }

  /** Starts every autostart domain that is not running; failures are logged, not thrown. */
  async autostart(): Promise<void> {
    const { registry } = this.deps;
    const wanted = registry.list().filter((r) => registry.resolve(r, "autostart") === true && !this.isRunning(r.name));
    await Promise.all(
      wanted.map((r) =>
        this.start(r.name).then(
          () => this.deps.log(`${r.name}: autostarted`),
          (err: Error) => this.deps.log(`${r.name}: autostart failed: ${err.message}`),
        ),
      ),
    );
  }

  start(name: string, opts: StartOptions = {}): Promise<void> {
    return this.deps.locks.run(name, () => this.startLocked(name, opts));
  }

  /** The key of a running encrypted domain's private volume, if qvmd holds it (see Live). */
  volumeKey(name: string): VolumeKey | undefined {
    return this.live.get(name)?.privateKey; // wiped only once the domain left `live`
  }

  /** An encrypted domain's key from its passphrase, before anything of the start is made. */
  private async unlock(name: string, plan: BootPlan, passphrase: string | undefined): Promise<VolumeKey | undefined> {
    if (!plan.unlock) return undefined;
    if (!passphrase) {
      throw new QvmError("PASSPHRASE_REQUIRED", `${name} is encrypted: its passphrase is needed (\`qvm start ${name}\` asks for it; the web shell's Start too)`);
    }
    return plan.unlock(passphrase);
  }

  private async startLocked(name: string, opts: StartOptions): Promise<void> {
    const { registry, events } = this.deps;
    const rec = registry.get(name);
    const state = this.state(name);
    if (state !== "Halted") throw new QvmError("FAILED_PRECONDITION", `${name} is already ${state === "Halting" ? "shutting down" : state.toLowerCase()}`);
    if (rec.props.template_for_dispvms === true) {
      const disposables = registry.list().filter((r) => r.class === "DispVM" && r.props.template === name && this.isRunning(r.name));
      if (disposables.length) {
        // Preloaded ones would come back at once: name the setting that keeps them away.
        const preloaded = disposables.some((r) => markedAsPreload(r, rec));
        const hint = preloaded ? `; preloaded ones go with \`qvm features ${name} ${PRELOAD_MAX} 0\`` : "";
        throw new QvmError("FAILED_PRECONDITION", `${name} is the template of running disposables (${disposables.map((r) => r.name).join(", ")}): start it once they are gone${hint}`);
      }
    }
    const plan = this.deps.planner.plan(rec);
    // A VMM this host lacks (cloud-hypervisor without its binary or KVM) fails the start here,
    // naming its install step, before anything is made.
    await plan.driver.checkHost();
    // Nothing boots from a kernel bundle or template image that changed behind qvm's back.
    await plan.checkIntegrity();
    const privateKey = await this.unlock(name, plan, opts.passphrase);
    let diskKeys: DiskKey[] = [];
    const forgetKeys = (): void => wipeKeys({ privateKey, diskKeys });
    // Admitted before its dependencies start, which then count it as running.
    const unreserve = await this.admit(plan).catch((err: unknown) => {
      forgetKeys();
      throw err;
    });
    let vm: RunningVm;
    let pid: number;
    let adopted = false;
    try {
      // Qubes starts a domain's netvm first. Each dependency takes its own lock; the netvm loop
      // check at property set keeps this from waiting on itself.
      for (const dep of plan.dependencies) {
        await this.ensureRunning(dep, false).catch((err: Error) => {
          throw new QvmError("FAILED_PRECONDITION", `${name} needs ${dep} running, and it cannot start: ${err.message}`, { cause: err });
        });
      }
      let disks;
      try {
        disks = await plan.prepareDisks(privateKey);
        diskKeys = disks.flatMap((d) => (d.key ? [d.key] : []));
      } catch (err) {
        this.deps.storage.discardVolatile(name);
        throw err;
      }
      this.starting.add(name);
      events.publish("domain-pre-start", name);
      try {
        vm = await this.deps.vms.start(plan, disks);
      } catch (err) {
        const reason = (err as Error).message;
        this.lastStop.set(name, reason);
        this.deps.storage.discardVolatile(name);
        events.publish("domain-start-failed", name, { reason });
        throw err;
      } finally {
        this.starting.delete(name);
      }
      const info = await vm.info();
      pid = info.pid;
      adopted = true;
      await this.adopt(name, vm, info, false, plan.memoryMiB, { privateKey, diskKeys });
    } finally {
      unreserve();
      if (!adopted) forgetKeys();
    }
    if (this.deps.storage.growPending(name)) {
      await this.growPrivateFs(vm).then(
        () => this.deps.storage.growDone(name),
        (err: Error) => this.deps.log(`${name}: cannot grow the private filesystem (retried at the next start): ${err.message}`),
      );
    }
    events.publish("domain-start", name, { pid: String(pid) });
  }

  /**
   * Admits a start under the limits, one admission at a time, counting what runs and what other
   * admitted starts will take; returns the release of this start's reservation (once it runs
   * or failed, the domain counts as running or not at all).
   */
  private admit(plan: BootPlan): Promise<() => void> {
    return this.deps.locks.run(ADMISSION_LOCK, async () => {
      const growthBytes = await plan.overlayBytes();
      const names: string[] = [];
      let memoryMiB = 0;
      let growth = 0;
      for (const [n, l] of this.live) {
        if (n === plan.name) continue;
        names.push(n);
        memoryMiB += l.memoryMiB;
        growth += await this.deps.storage.overlayGrowth(n).catch(() => 0);
      }
      for (const [n, r] of this.reserved) {
        if (n === plan.name || this.live.has(n)) continue;
        names.push(n);
        memoryMiB += r.memoryMiB;
        growth += r.growthBytes;
      }
      checkAdmission(this.limits, { name: plan.name, memoryMiB: plan.memoryMiB, growthBytes }, { names, memoryMiB, growthBytes: growth, freeBytes: this.deps.storage.freeBytes() });
      const mine: Reservation = { memoryMiB: plan.memoryMiB, growthBytes };
      this.reserved.set(plan.name, mine);
      return () => {
        if (this.reserved.get(plan.name) === mine) this.reserved.delete(plan.name);
      };
    });
  }

  /** Grows the private volume of a running domain: the disk through the VMM, then its filesystem. */
  async growPrivateLive(name: string, sizeBytes: number): Promise<void> {
    const l = this.liveOrThrow(name);
    await this.deps.storage.checkGrow(name, sizeBytes);
    await l.vm.resizeDisk(PRIVATE_DISK_INDEX, sizeBytes);
    await this.growPrivateFs(l.vm);
  }

  private async growPrivateFs(vm: RunningVm): Promise<void> {
    const p = vm.agent.exec({ command: ["sh", "-c", 'resize2fs "$(findmnt -n -o SOURCE /rw)" 2>&1'], user: "root" });
    p.stdin.end();
    let out = "";
    p.stdout.on("data", (c: Buffer) => (out = (out + c.toString()).slice(-500)));
    p.stderr.resume();
    const exit = await p.exit;
    if (exit.code !== 0) throw new QvmError("STORAGE_FAILED", `resize2fs in ${vm.name} failed: ${JSON.stringify(out.trim())}`);
  }

  /** Takes a VM on: attaches what every running domain gets, and watches for its end. */
  private async adopt(name: string, vm: RunningVm, info: VmInfo, reattached: boolean, memoryMiB: number, keys: { privateKey?: VolumeKey; diskKeys: DiskKey[] } = { diskKeys: [] }): Promise<void> {
    const l: Live = { vm, pid: info.pid, paused: info.state === "paused", halting: false, memoryMiB, accel: info.accel, ...keys };
    this.live.set(name, l);
    this.lastStop.delete(name);
    void vm.exited.then((exit) => {
      if (this.live.get(name) !== l) return;
      this.live.delete(name);
      wipeKeys(l);
      this.lastStop.set(name, exit.reason);
      // Under the domain's lock, and only while no new run took its place: the volatile
      // overlays are discarded and a template's root committed. Announced after that, so
      // "stopped" means a template's changes are in and the domain's overlays are gone.
      void this.deps.locks
        .run(name, async () => {
          if (this.live.has(name)) return;
          this.deps.storage.discardVolatile(name);
          const rec = this.deps.registry.store.get(name);
          if (rec && rec.class !== "AppVM") await this.deps.storage.commitRoot(name);
          this.deps.storage.prepareNextStart(name);
        })
        .then(() => this.deps.events.publish("domain-shutdown", name, { reason: exit.reason, clean: String(exit.clean) }));
    });
    await vm.attachments.attachAll(this.deps.attachers, { name, info, reattached }, this.deps.log);
  }

  private liveOrThrow(name: string): Live {
    this.deps.registry.get(name);
    const l = this.live.get(name);
    if (!l) throw new QvmError("FAILED_PRECONDITION", `${name} is not running${this.starting.has(name) ? " yet (it is starting)" : ""}`);
    return l;
  }

  /**
   * Asks the guest to power off. With `wait`, returns how it stopped. `force` (Qubes' meaning:
   * even if it hurts other domains) kills the VMM when the guest has not stopped within
   * shutdown_timeout and skips the refusal while a running domain uses this one as its netvm;
   * without it a guest that does not stop in time is left running and the call fails.
   */
  shutdown(name: string, opts: { wait: boolean; force: boolean }): Promise<string> {
    return this.deps.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (l.halting) throw new QvmError("FAILED_PRECONDITION", `${name} is already shutting down`);
      const { registry } = this.deps;
      if (!opts.force) {
        const users = registry.list().filter((r) => this.isRunning(r.name) && registry.resolve(r, "netvm") === name);
        if (users.length) {
          throw new QvmError("FAILED_PRECONDITION", `There are other VMs connected to this VM: ${users.map((u) => u.name).join(", ")}; shut them down first, give them another netvm, or use --force`);
        }
      }
      const timeoutMs = Number(registry.resolve(registry.get(name), "shutdown_timeout")) * 1000;
      l.halting = true;
      this.deps.events.publish("domain-pre-shutdown", name);
      const done = l.vm.shutdown(timeoutMs, { kill: opts.force }).then(
        async (exit) => {
          // Under this call's lock: when --wait returns, the volatile overlays are gone and a
          // template's changes are committed.
          this.deps.storage.discardVolatile(name);
          await this.deps.storage.commitRoot(name);
          return exit.reason;
        },
        (err: Error) => {
          l.halting = false;
          throw err;
        },
      );
      if (!opts.wait) {
        done.catch((err: Error) => this.deps.log(`${name}: shutdown failed: ${err.message}`));
        return "";
      }
      return done;
    });
  }

  kill(name: string): Promise<void> {
    return this.deps.locks.run(name, async () => {
      await this.liveOrThrow(name).vm.kill();
      this.deps.storage.discardVolatile(name);
    });
  }

  pause(name: string): Promise<void> {
    return this.deps.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (l.halting) throw new QvmError("FAILED_PRECONDITION", `${name} is shutting down`);
      if (l.paused) throw new QvmError("FAILED_PRECONDITION", `${name} is already paused`);
      await l.vm.pause();
      l.paused = true;
      this.deps.events.publish("domain-paused", name);
    });
  }

  unpause(name: string): Promise<void> {
    return this.deps.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (!l.paused) throw new QvmError("FAILED_PRECONDITION", `${name} is not paused`);
      await l.vm.resume();
      l.paused = false;
      this.deps.events.publish("domain-unpaused", name);
    });
  }

  /** The running domain, started first unless `noAutostart` (then a halted domain is an error). */
  async ensureRunning(name: string, noAutostart: boolean): Promise<RunningVm> {
    this.deps.registry.get(name);
    const now = this.live.get(name);
    if (now && !now.halting) return now.vm;
    if (noAutostart) throw new QvmError("FAILED_PRECONDITION", `${name} is not running (and autostart was turned off with --no-autostart)`);
    await this.deps.locks.run(name, async () => {
      if (!this.live.has(name)) await this.startLocked(name, {});
    });
    const l = this.live.get(name);
    if (!l || l.halting) throw new QvmError("FAILED_PRECONDITION", `${name} stopped before the command could run`);
    return l.vm;
  }

  running(name: string): RunningVm {
    return this.liveOrThrow(name).vm;
  }

  /** qvmd is exiting: let go of every VM without stopping it; the next qvmd re-attaches. */
  async detachAll(): Promise<void> {
    const all = [...this.live.values()];
    this.live.clear();
    await Promise.all(all.map((l) => l.vm.detach().catch(() => {})));
  }
}

/** Forgets a run's keys (its private volume's and its disks'). */
function wipeKeys(keys: { privateKey?: VolumeKey | undefined; diskKeys: readonly DiskKey[] }): void {
  keys.privateKey?.wipe();
  for (const k of keys.diskKeys) k.wipe();
}
