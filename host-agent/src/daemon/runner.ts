// Running domains: start, shutdown, kill, pause, exec, console, and taking VMMs back after a
// qvmd restart. One DomainVm per running domain; per-domain calls are serialized. A VMM that dies
// is noticed through the driver's exit promise (own child: at once; re-attached: polled every
// 500 ms) and its domain is marked Halted with the reason.
import { existsSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import type { ImageStore } from "@qvm/images";
import { DEFAULT_REVISIONS_TO_KEEP, type VolumeStore } from "../storage/volumes.js";
import { DomainVm } from "../domain/domain-vm.js";
import type { DomainRecord } from "../model/domain.js";
import { validateDomainName } from "../model/names.js";
import type { VmmDriver } from "../vmm/driver.js";
import type { EventBus } from "./events.js";
import { KeyedMutex } from "./keyed-mutex.js";
import type { DomainRegistry } from "./registry.js";

/** The private volume's place in the disks VolumeStore.prepareStart returns (root is 0). */
const PRIVATE_DISK_INDEX = 1;

/** Qubes' power states (Transient: starting). */
export type PowerState = "Halted" | "Transient" | "Running" | "Paused" | "Halting";

export interface RunnerDeps {
  registry: DomainRegistry;
  volumes: VolumeStore;
  images: ImageStore;
  driver: VmmDriver;
  events: EventBus;
  dataDir: string;
  runtimeDir: string;
  log: (msg: string) => void;
  /** Told when a domain's VMM is taken on (started or re-attached) and when it is let go. */
  hooks?: { running(name: string, dom: DomainVm): void; gone(name: string): void };
}

interface Live {
  dom: DomainVm;
  pid: number;
  paused: boolean;
  halting: boolean;
}

export class DomainRunner {
  private readonly live = new Map<string, Live>();
  private readonly starting = new Set<string>();
  private readonly lastStop = new Map<string, string>();
  readonly locks = new KeyedMutex();

  constructor(private readonly deps: RunnerDeps) {}

  runtimeDirOf(name: string): string {
    return path.join(this.deps.runtimeDir, "domains", validateDomainName(name));
  }

  logDirOf(name: string): string {
    return path.join(this.deps.dataDir, "logs", validateDomainName(name));
  }

  state(name: string): PowerState {
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

  lastStopReason(name: string): string {
    return this.lastStop.get(name) ?? "";
  }

  runningNames(): string[] {
    return [...this.live.keys()];
  }

  /** After a qvmd restart: takes back every VMM still running; cleans up after dead or orphaned ones. */
  async reattachAll(): Promise<void> {
    const dir = path.join(this.deps.runtimeDir, "domains");
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      let dom: DomainVm | undefined;
      try {
        validateDomainName(name);
        dom = await DomainVm.attach(name, this.deps.driver, path.join(dir, name));
      } catch (err) {
        this.deps.log(`cannot re-attach ${JSON.stringify(name)}: ${(err as Error).message}`);
        continue;
      }
      if (!dom) {
        this.lastStop.set(name, "the VMM exited while qvmd was not running");
        continue;
      }
      if (!this.deps.registry.store.get(name)) {
        this.deps.log(`${name}: VMM running for a domain that no longer exists; killing it`);
        await dom.kill().catch(() => {});
        continue;
      }
      const info = await dom.vm.info();
      this.adopt(name, dom, info.pid, info.state === "paused");
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

  start(name: string): Promise<void> {
    return this.locks.run(name, () => this.startLocked(name));
  }

  private async startLocked(name: string): Promise<void> {
    const { registry, events } = this.deps;
    const rec = registry.get(name);
    const state = this.state(name);
    if (state !== "Halted") throw new QvmError("FAILED_PRECONDITION", `${name} is already ${state === "Halting" ? "shutting down" : state.toLowerCase()}`);
    if (rec.props.template_for_dispvms === true) {
      const disposables = registry.list().filter((r) => r.class === "DispVM" && r.props.template === name && this.isRunning(r.name));
      if (disposables.length) {
        throw new QvmError("FAILED_PRECONDITION", `${name} is the template of running disposables (${disposables.map((r) => r.name).join(", ")}): start it once they are gone`);
      }
    }
    const sources = this.templateVolumesOf(rec);
    const kernel = this.kernelOf(rec);
    const disks = await this.deps.volumes.prepareStart(name, rec.class, this.runtimeDirOf(name), {
      ...sources,
      revisionsToKeep: registry.revisionsToKeep(rec, "private"),
    });
    const int = (p: string) => Number(registry.resolve(rec, p));
    this.starting.add(name);
    events.publish("domain-pre-start", name);
    let dom: DomainVm;
    try {
      dom = await DomainVm.start({
        name,
        driver: this.deps.driver,
        kernel,
        disks,
        runtimeDir: this.runtimeDirOf(name),
        logDir: this.logDirOf(name),
        memoryMiB: int("memory"),
        vcpus: int("vcpus"),
        kernelArgs: String(registry.resolve(rec, "kernelopts")).split(/\s+/).filter(Boolean),
        agentTimeoutMs: int("qrexec_timeout") * 1000,
      });
    } catch (err) {
      const reason = (err as Error).message;
      this.lastStop.set(name, reason);
      events.publish("domain-start-failed", name, { reason });
      throw err;
    } finally {
      this.starting.delete(name);
    }
    const info = await dom.vm.info();
    this.adopt(name, dom, info.pid, false);
    if (existsSync(this.deps.volumes.growFlag(name))) {
      await this.growPrivateFs(dom).then(
        () => rmSync(this.deps.volumes.growFlag(name), { force: true }),
        (err: Error) => this.deps.log(`${name}: cannot grow the private filesystem (retried at the next start): ${err.message}`),
      );
    }
    events.publish("domain-start", name, { pid: String(info.pid) });
  }

  /** Grows the private volume of a running domain: the disk through the VMM, then its filesystem. */
  async growPrivateLive(name: string, sizeBytes: number): Promise<void> {
    const l = this.liveOrThrow(name);
    await this.deps.volumes.checkGrow(name, sizeBytes);
    await l.dom.vm.resizeDisk(PRIVATE_DISK_INDEX, sizeBytes);
    await this.growPrivateFs(l.dom);
  }

  private async growPrivateFs(dom: DomainVm): Promise<void> {
    const p = dom.agent.exec({ command: ["sh", "-c", 'resize2fs "$(findmnt -n -o SOURCE /rw)" 2>&1'], user: "root" });
    p.stdin.end();
    let out = "";
    p.stdout.on("data", (c: Buffer) => (out = (out + c.toString()).slice(-500)));
    p.stderr.resume();
    const exit = await p.exit;
    if (exit.code !== 0) throw new QvmError("VMM_FAILED", `resize2fs in ${dom.name} failed: ${JSON.stringify(out.trim())}`);
  }

  private adopt(name: string, dom: DomainVm, pid: number, paused: boolean): void {
    const l: Live = { dom, pid, paused, halting: false };
    this.live.set(name, l);
    this.lastStop.delete(name);
    this.deps.hooks?.running(name, dom);
    void dom.vm.exited.then((exit) => {
      if (this.live.get(name) !== l) return;
      this.live.delete(name);
      this.deps.hooks?.gone(name);
      this.lastStop.set(name, exit.reason);
      const rec = this.deps.registry.store.get(name);
      // Announced once the root is committed, so "stopped" means a template's changes are in.
      void (rec && rec.class !== "AppVM" ? this.locks.run(name, () => this.commitRoot(name)) : Promise.resolve()).then(() =>
        this.deps.events.publish("domain-shutdown", name, { reason: exit.reason, clean: String(exit.clean) }),
      );
    });
  }

  /**
   * What a domain's snapshots are taken from: an AppVM's template's root; a disposable's
   * template's private and that template's own template's root. A disposable's template must be
   * halted: its private is read, so it must not change underneath.
   */
  templateVolumesOf(rec: DomainRecord): { templateRoot?: string; templatePrivate?: string } {
    if (rec.class === "AppVM") return { templateRoot: this.templateRootOf(rec, true) };
    if (rec.class !== "DispVM") return {};
    const dvm = this.deps.registry.get(String(rec.props.template));
    if (this.isRunning(dvm.name)) throw new QvmError("FAILED_PRECONDITION", `${dvm.name} is running: its disposables can start once it is shut down`);
    return { templateRoot: this.templateRootOf(dvm, true), templatePrivate: this.deps.volumes.files(dvm.name).private };
  }

  /** The committed root of an AppVM's template: what its root snapshot is taken from. */
  templateRootOf(rec: DomainRecord, mustExist = false): string {
    const template = String(this.deps.registry.resolve(rec, "template"));
    if (!template) throw new QvmError("FAILED_PRECONDITION", `${rec.name} has no template; set one with \`qvm prefs ${rec.name} template NAME\``);
    this.deps.registry.get(template);
    const root = this.deps.volumes.files(template).root;
    if (mustExist && !existsSync(root)) {
      throw new QvmError("MISSING_DEPENDENCY", `template ${template} has no root volume (${root} is missing): rebuild it with \`qvm template build ${template}\` after \`qvm template remove ${template}\``);
    }
    return root;
  }

  /** Makes a stopped TemplateVM's or StandaloneVM's root changes its new root (see VolumeStore.commitRoot). */
  async commitRoot(name: string): Promise<void> {
    try {
      const rec = this.deps.registry.store.get(name);
      const keep = rec ? this.deps.registry.revisionsToKeep(rec, "root") : DEFAULT_REVISIONS_TO_KEEP;
      if (await this.deps.volumes.commitRoot(name, keep)) this.deps.log(`${name}: root changes committed`);
    } catch (err) {
      this.deps.log(`${name}: cannot commit root changes (kept in root-dirty.qcow2, retried at the next start): ${(err as Error).message}`);
    }
  }

  private kernelOf(rec: DomainRecord) {
    const ref = String(this.deps.registry.resolve(rec, "kernel"));
    if (ref === "") throw new QvmError("FAILED_PRECONDITION", `${rec.name}: booting the domain's own kernel (kernel "") is not supported yet; reset it with \`qvm prefs -D ${rec.name} kernel\``);
    if (ref !== "current") throw new QvmError("NOT_FOUND", `kernel bundle "${ref}" is not available; only "current" (the one \`qvm-images build\` made) is`);
    return this.deps.images.kernel();
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
    return this.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (l.halting) throw new QvmError("FAILED_PRECONDITION", `${name} is already shutting down`);
      const { registry } = this.deps;
      if (!opts.force) {
        const users = registry.list().filter((r) => this.isRunning(r.name) && registry.resolve(r, "netvm") === name);
        if (users.length) {
          throw new QvmError("FAILED_PRECONDITION", `${name} is the netvm of running ${users.map((u) => u.name).join(", ")}; stop those first or use --force`);
        }
      }
      const timeoutMs = Number(registry.resolve(registry.get(name), "shutdown_timeout")) * 1000;
      l.halting = true;
      this.deps.events.publish("domain-pre-shutdown", name);
      const done = l.dom.shutdown(timeoutMs, { kill: opts.force }).then(
        async (exit) => {
          // Under this call's lock: when --wait returns, a template's changes are committed.
          await this.commitRoot(name);
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
    return this.locks.run(name, async () => {
      await this.liveOrThrow(name).dom.kill();
    });
  }

  pause(name: string): Promise<void> {
    return this.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (l.paused) throw new QvmError("FAILED_PRECONDITION", `${name} is already paused`);
      await l.dom.pause();
      l.paused = true;
      this.deps.events.publish("domain-paused", name);
    });
  }

  unpause(name: string): Promise<void> {
    return this.locks.run(name, async () => {
      const l = this.liveOrThrow(name);
      if (!l.paused) throw new QvmError("FAILED_PRECONDITION", `${name} is not paused`);
      await l.dom.resume();
      l.paused = false;
      this.deps.events.publish("domain-unpaused", name);
    });
  }

  /** The running domain, started first unless `noAutostart` (then a halted domain is an error). */
  async ensureRunning(name: string, noAutostart: boolean): Promise<DomainVm> {
    this.deps.registry.get(name);
    const now = this.live.get(name);
    if (now && !now.halting) return now.dom;
    if (noAutostart) throw new QvmError("FAILED_PRECONDITION", `${name} is not running (and autostart was turned off with --no-autostart)`);
    await this.locks.run(name, async () => {
      if (!this.live.has(name)) await this.startLocked(name);
    });
    const l = this.live.get(name);
    if (!l || l.halting) throw new QvmError("FAILED_PRECONDITION", `${name} stopped before the command could run`);
    return l.dom;
  }

  running(name: string): DomainVm {
    return this.liveOrThrow(name).dom;
  }

  /** qvmd is exiting: let go of every VMM without stopping it; the next qvmd re-attaches. */
  async detachAll(): Promise<void> {
    const all = [...this.live.values()];
    for (const name of this.live.keys()) this.deps.hooks?.gone(name);
    this.live.clear();
    await Promise.all(all.map((l) => l.dom.detach().catch(() => {})));
  }
}
