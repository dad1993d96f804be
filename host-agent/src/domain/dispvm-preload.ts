// Preloaded disposables, after Qubes 4.3: for each template for disposables qvmd keeps N
// disposables booted and paused (N: its `preload-dispvm-max` feature, else the global
// `preload_dispvm_max` for default_dispvm, else 0), so that a call for a disposable gets one in
// the time an unpause takes instead of a boot. The pool fills in the background, one boot at a
// time for all templates (each boot is a whole VM: a burst of them would starve the host), when
// qvmd starts, when N changes and after each hand-out; it removes the excess when N drops and
// replaces preloads made outdated by a change to their template. A failed preload is logged and
// retried after a backoff that doubles, so a template that cannot boot never loops.
//
// A preload belongs to no caller until it is claimed: claiming is synchronous (one JavaScript
// turn takes it out of the pool), so no two callers ever get the same one. Until then it is
// unusable by name (DispVms.checkUsable), counts against the disposable caps and, while it runs,
// against the memory limit like any domain.
//
// Records mirror the pool for a qvmd restart, with Qubes' names (preload-marks.ts): the template
// lists its preloads (`preload-dispvm`), a preload is `preload-dispvm-in-progress` until it is
// paused and again from claim to use, and `preload-dispvm-completed` once paused. A new qvmd
// takes back preloads that are listed, completed, not in progress and still paused; every other
// disposable an earlier qvmd left is destroyed by the boot (core/boot.ts).
import type { Clock } from "../base/clock.js";
import type { EventBus, QvmEvent } from "../base/events.js";
import type { DomainRecord } from "../model/domain.js";
import { MAX_PRELOAD_DISPVMS } from "../model/properties.js";
import type { DispVms, PreloadClaim, PreloadPool } from "./dispvms.js";
import { PRELOAD_COMPLETED, PRELOAD_GLOBAL, PRELOAD_IN_PROGRESS, PRELOAD_LIST, PRELOAD_MAX, preloadList } from "./preload-marks.js";
import type { DomainRegistry } from "./registry.js";
import type { DomainRunner } from "./runner.js";

export interface PreloadDeps {
  registry: DomainRegistry;
  runner: Pick<DomainRunner, "start" | "pause" | "unpause" | "state">;
  dispvms: Pick<DispVms, "createPreload" | "adoptPreload" | "destroy" | "applyTemplateFirewall">;
  events: EventBus;
  clock: Clock;
  log: (msg: string) => void;
  /** Resolves once what a hand-out changed is in force (the netvm enforces the disposable's firewall). */
  settled?: () => Promise<void>;
  /** Wait before retrying after a first failure, doubled at each further one up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

const DEFAULT_BACKOFF_MS = 5_000;
const DEFAULT_MAX_BACKOFF_MS = 5 * 60_000;

/**
 * Properties of a template for disposables whose change leaves its preloads as they are: read
 * live (netvm: a paused preload's link moves when it is unpaused), or handled as a change of N.
 */
const LIVE_PROPERTIES = new Set(["netvm", "autostart", "default_dispvm", "template_for_dispvms"]);

interface Preload {
  name: string;
  dvm: string;
  stage: "booting" | "ready";
  /** True once booted and paused (or claimed before the pause); false when it failed or was dropped (and destroyed). */
  booted: Promise<boolean>;
  claimed: boolean;
  dropped: boolean;
}

interface Backoff {
  failures: number;
  retryAt: number;
}

export class DispVmPreloads implements PreloadPool {
  /** Preloads not claimed, by name, oldest first. */
  private readonly pool = new Map<string, Preload>();
  /** Claimed and not yet in use: still preloads (unusable by name), by name → template. */
  private readonly handingOut = new Map<string, string>();
  private readonly backoff = new Map<string, Backoff>();
  /** Templates being removed: nothing is preloaded for them. */
  private readonly draining = new Set<string>();
  private filling = false;
  /** The fill pass running (its end), for settled(). */
  private pass: Promise<void> = Promise.resolve();
  private again = false;
  /** Destructions of dropped preloads under way. */
  private readonly dropping = new Set<Promise<void>>();
  private closed = false;
  private wakeAt: number | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: PreloadDeps) {}

  /**
   * At qvmd start, before leftover disposables are destroyed: takes back the preloads an earlier
   * qvmd completed and nobody touched since (listed, completed, not in progress, still paused)
   * and returns their names; every template's list is rewritten to what was taken back.
   */
  adopt(): Set<string> {
    const { registry, runner, dispvms, log } = this.deps;
    const kept = new Set<string>();
    this.pool.clear();
    this.handingOut.clear();
    for (const rec of registry.list()) {
      if (rec.class !== "DispVM" || !rec.autoCleanup) continue;
      const dvm = String(rec.props.template ?? "");
      const listed = preloadList(registry.store.get(dvm)).includes(rec.name);
      if (!listed || !rec.features[PRELOAD_COMPLETED] || rec.features[PRELOAD_IN_PROGRESS] || runner.state(rec.name) !== "Paused") continue;
      this.pool.set(rec.name, { name: rec.name, dvm, stage: "ready", booted: Promise.resolve(true), claimed: false, dropped: false });
      dispvms.adoptPreload(rec.name);
      kept.add(rec.name);
      log(`${rec.name}: preloaded disposable of ${dvm} taken back (paused, as an earlier qvmd left it)`);
    }
    for (const rec of registry.list()) if (rec.features[PRELOAD_LIST] !== undefined) this.persistList(rec.name);
    return kept;
  }

  /** Follows what changes N or outdates preloads, and fills the pool. */
  start(): void {
    this.closed = false;
    this.unsubscribe ??= this.deps.events.subscribe((ev) => this.onEvent(ev));
    this.kick();
  }

  /** qvmd is exiting: nothing more is preloaded or handed out; paused preloads stay for the next qvmd. */
  close(): void {
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** How many preloads `dvm` should have now. */
  wanted(dvm: string): number {
    const { registry } = this.deps;
    const rec = registry.store.get(dvm);
    if (!rec || rec.class !== "AppVM" || rec.props.template_for_dispvms !== true || this.draining.has(dvm)) return 0;
    const own = rec.features[PRELOAD_MAX];
    if (own !== undefined) return count(own);
    const globals = registry.store.globals();
    return globals.default_dispvm === dvm ? count(String(globals[PRELOAD_GLOBAL] ?? 0)) : 0;
  }

  /** The preloads of `dvm` (booting or paused, not claimed), oldest first. */
  preloads(dvm: string): string[] {
    return [...this.pool.values()].filter((p) => p.dvm === dvm).map((p) => p.name);
  }

  preloadOf(name: string): string | undefined {
    return this.pool.get(name)?.dvm ?? this.handingOut.get(name);
  }

  isPreload(name: string): boolean {
    return this.preloadOf(name) !== undefined;
  }

  /** Takes a preload of `dvm` for a caller: a paused one first, else one still booting (waited for). */
  claim(dvm: string): PreloadClaim | undefined {
    if (this.closed) return undefined;
    const { runner } = this.deps;
    const mine = [...this.pool.values()].filter((p) => p.dvm === dvm);
    // A paused one whose VM died has not been dropped yet if its exit is still being handled.
    const p = mine.find((x) => x.stage === "ready" && runner.state(x.name) === "Paused") ?? mine.find((x) => x.stage === "booting");
    if (!p) {
      this.kick(); // Qubes fills the gap on a request that found none
      return undefined;
    }
    this.pool.delete(p.name);
    p.claimed = true;
    this.handingOut.set(p.name, dvm);
    this.persistList(dvm);
    this.mark(p.name, { [PRELOAD_IN_PROGRESS]: "1" }, []);
    this.kick();
    return { name: p.name, deliver: () => this.deliver(p) };
  }

  /**
   * Stops preloading for a template that is being removed and destroys its preloads; the
   * returned function ends that (call it whether the removal succeeded or not).
   */
  async drain(dvm: string): Promise<() => void> {
    this.draining.add(dvm);
    await Promise.all(this.preloads(dvm).map((n) => this.drop(this.pool.get(n)!, "its template is being removed")));
    return () => {
      this.draining.delete(dvm);
      this.kick();
    };
  }

  // ---- filling ---------------------------------------------------------------------------------

  /** Runs a fill pass unless one runs (then it goes on with what changed). */
  private kick(): void {
    if (this.closed) return;
    if (this.filling) {
      this.again = true;
      return;
    }
    this.filling = true;
    this.again = false;
    this.pass = this.fill()
      .catch((err: Error) => this.deps.log(`preloaded disposables: ${err.message}`))
      .finally(() => {
        this.filling = false;
        if (this.again) this.kick();
      });
  }

  /** Resolves once no fill pass runs (tests, and a benchmark waiting for its preload). */
  async settled(): Promise<void> {
    while (this.filling || this.dropping.size) await Promise.all([this.pass, ...this.dropping]);
  }

  /** Drops the excess, then boots one preload at a time while a template lacks some. */
  private async fill(): Promise<void> {
    for (;;) {
      this.trim();
      const dvm = this.nextToFill();
      if (!dvm || this.closed) return;
      await this.preloadOne(dvm);
    }
  }

  /** Preloads beyond a template's N go, newest (and so still booting) first. */
  private trim(): void {
    const byDvm = new Map<string, Preload[]>();
    for (const p of this.pool.values()) byDvm.set(p.dvm, [...(byDvm.get(p.dvm) ?? []), p]);
    for (const [dvm, ps] of byDvm) {
      const n = this.wanted(dvm);
      for (const p of ps.slice(n).reverse()) void this.drop(p, `${PRELOAD_MAX} is ${n}`);
    }
  }

  /** A template that lacks preloads and is not waiting out a backoff (whose end is scheduled). */
  private nextToFill(): string | undefined {
    const now = this.deps.clock.now();
    for (const rec of this.deps.registry.list()) {
      if (this.wanted(rec.name) <= this.preloads(rec.name).length) continue;
      const b = this.backoff.get(rec.name);
      if (!b || b.retryAt <= now) return rec.name;
      this.wakeUpAt(b.retryAt);
    }
    return undefined;
  }

  private async preloadOne(dvm: string): Promise<void> {
    const { runner, dispvms, log } = this.deps;
    let name: string;
    try {
      name = await dispvms.createPreload(dvm, { [PRELOAD_IN_PROGRESS]: "1" });
    } catch (err) {
      this.failed(dvm, err as Error);
      return;
    }
    // The template may have begun its removal (or qvmd its exit) while the record was made.
    if (this.closed || this.draining.has(dvm)) {
      await dispvms.destroy(name).catch((e: Error) => log(`${name}: cannot destroy: ${e.message}`));
      return;
    }
    let settle!: (ok: boolean) => void;
    const p: Preload = { name, dvm, stage: "booting", booted: new Promise((r) => (settle = r)), claimed: false, dropped: false };
    this.pool.set(name, p);
    this.persistList(dvm);
    log(`${dvm}: preloading ${name}`);
    try {
      await runner.start(name);
      // Claimed while booting: the caller takes it running; pausing it now would only delay it.
      if (!p.claimed && !p.dropped) await runner.pause(name);
      if (p.dropped) throw new Error("dropped while booting");
      p.stage = "ready";
      this.mark(name, { [PRELOAD_COMPLETED]: "1" }, p.claimed ? [] : [PRELOAD_IN_PROGRESS]);
      this.backoff.delete(dvm);
      if (!p.claimed) log(`${dvm}: ${name} is preloaded (paused until a disposable of ${dvm} is asked for)`);
      settle(true);
    } catch (err) {
      if (this.pool.get(name) === p) {
        this.pool.delete(name);
        this.persistList(dvm);
      }
      if (!p.dropped) this.failed(dvm, err as Error, name);
      await dispvms.destroy(name).catch((e: Error) => log(`${name}: cannot destroy: ${e.message}`));
      settle(false);
    }
  }

  /** A failed preload: logged, and its template waits (doubling each time) before the next try. */
  private failed(dvm: string, err: Error, name = ""): void {
    const { clock, log } = this.deps;
    const b = this.backoff.get(dvm) ?? { failures: 0, retryAt: 0 };
    b.failures++;
    const delay = Math.min(this.deps.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS, (this.deps.backoffMs ?? DEFAULT_BACKOFF_MS) * 2 ** (b.failures - 1));
    b.retryAt = clock.now() + delay;
    this.backoff.set(dvm, b);
    log(`${dvm}: cannot preload a disposable${name ? ` (${name})` : ""}, failure ${b.failures}: ${err.message}; trying again in ${Math.round(delay / 1000)} s`);
    this.wakeUpAt(b.retryAt);
  }

  /** A fill pass at `t` (one timer: the earliest wanted). */
  private wakeUpAt(t: number): void {
    if (this.closed || (this.wakeAt !== undefined && this.wakeAt <= t)) return;
    this.wakeAt = t;
    void this.deps.clock.sleep(Math.max(0, t - this.deps.clock.now())).then(() => {
      if (this.wakeAt === t) this.wakeAt = undefined;
      this.kick();
    });
  }

  /** Takes a preload out of the pool and destroys it; resolves once it is gone. */
  private drop(p: Preload, why: string): Promise<void> {
    if (this.pool.get(p.name) !== p) return Promise.resolve();
    this.pool.delete(p.name);
    p.dropped = true;
    this.persistList(p.dvm);
    this.deps.log(`${p.dvm}: removing preloaded ${p.name}: ${why}`);
    const gone = this.deps.dispvms.destroy(p.name).catch((err: Error) => this.deps.log(`${p.name}: cannot destroy: ${err.message}`));
    this.dropping.add(gone);
    void gone.finally(() => this.dropping.delete(gone));
    return gone;
  }

  // ---- hand-out ----------------------------------------------------------------------------------

  /**
   * Makes a claimed preload the caller's: waits for its boot if it was still booting, unpauses
   * it, marks it used, and then applies what each use gets afresh (its template's firewall, in
   * force before the caller's program runs). On failure it is destroyed and the caller falls
   * back to a new disposable.
   */
  private async deliver(p: Preload): Promise<boolean> {
    const { runner, dispvms, log } = this.deps;
    try {
      if (!(await p.booted)) return false;
      if (runner.state(p.name) === "Paused") await runner.unpause(p.name);
      this.mark(p.name, {}, [PRELOAD_IN_PROGRESS]);
      this.handingOut.delete(p.name);
      dispvms.applyTemplateFirewall(p.name);
      await this.deps.settled?.();
      log(`${p.dvm}: handed out preloaded ${p.name}`);
      return true;
    } catch (err) {
      log(`${p.name}: cannot hand out the preloaded disposable (a new one is made instead): ${(err as Error).message}`);
      await dispvms.destroy(p.name).catch((e: Error) => log(`${p.name}: cannot destroy: ${e.message}`));
      return false;
    } finally {
      this.handingOut.delete(p.name);
    }
  }

  // ---- what changes the pool ---------------------------------------------------------------------

  private onEvent(ev: QvmEvent): void {
    const prop = ev.fields.name ?? "";
    switch (ev.type) {
      case "feature-set":
      case "feature-delete":
        if (prop === PRELOAD_MAX) this.kick();
        return;
      case "global-property-set":
        if (prop === PRELOAD_GLOBAL || prop === "default_dispvm") this.kick();
        return;
      case "property-set":
      case "property-reset":
        if (LIVE_PROPERTIES.has(prop)) this.kick();
        else this.recycle(ev.domain, `its template's ${prop} changed`);
        return;
      case "domain-shutdown":
        this.onShutdown(ev.domain);
        return;
      case "domain-delete":
        this.kick();
        return;
      default:
        return;
    }
  }

  /**
   * A paused preload that stopped (killed, or its VMM died) goes, and counts as a failure; a
   * TemplateVM that stopped has committed a new root, which its templates' preloads do not have.
   */
  private onShutdown(name: string): void {
    const p = this.pool.get(name);
    if (p?.stage === "ready") {
      void this.drop(p, "it stopped while preloaded");
      this.failed(p.dvm, new Error("it stopped while preloaded"), name);
      this.kick();
      return;
    }
    const rec = this.deps.registry.store.get(name);
    if (rec?.class !== "TemplateVM") return;
    for (const dvm of this.templatesOn(rec)) this.recycle(dvm, `${name} stopped and may have a new root`);
  }

  /** Preloads made before a change to their template are replaced by new ones. */
  private recycle(dvm: string, why: string): void {
    const mine = this.preloads(dvm);
    if (!mine.length) return;
    for (const n of mine) void this.drop(this.pool.get(n)!, `outdated: ${why}`);
    this.kick();
  }

  /** Templates for disposables whose root is `tmpl`'s and that have preloads. */
  private templatesOn(tmpl: DomainRecord): string[] {
    const dvms = new Set([...this.pool.values()].map((p) => p.dvm));
    return [...dvms].filter((d) => this.deps.registry.store.get(d)?.props.template === tmpl.name);
  }

  // ---- the records' mirror -----------------------------------------------------------------------

  /** Writes `dvm`'s preload list (features are persisted: the next qvmd reads them). */
  private persistList(dvm: string): void {
    const { registry, log } = this.deps;
    const rec = registry.store.get(dvm);
    if (!rec) return;
    const names = this.preloads(dvm).join(" ");
    try {
      if (names && rec.features[PRELOAD_LIST] !== names) registry.setFeature(dvm, PRELOAD_LIST, names);
      else if (!names && rec.features[PRELOAD_LIST] !== undefined) registry.removeFeature(dvm, PRELOAD_LIST);
    } catch (err) {
      log(`${dvm}: cannot record its preloaded disposables: ${(err as Error).message}`);
    }
  }

  private mark(name: string, set: Record<string, string>, remove: string[]): void {
    const { registry, log } = this.deps;
    const rec = registry.store.get(name);
    if (!rec) return;
    try {
      for (const [k, v] of Object.entries(set)) if (rec.features[k] !== v) registry.setFeature(name, k, v);
      for (const k of remove) if (rec.features[k] !== undefined) registry.removeFeature(name, k);
    } catch (err) {
      log(`${name}: cannot record its preload state: ${(err as Error).message}`);
    }
  }
}

/** A stored count, at most MAX_PRELOAD_DISPVMS; anything but digits (a store edited by hand) counts as 0. */
function count(text: string): number {
  return /^\d{1,3}$/.test(text) ? Math.min(Number(text), MAX_PRELOAD_DISPVMS) : 0;
}
