// Disposables: a DispVM record made from an AppVM with template_for_dispvms, and its removal
// with every trace (VM, store entry, volumes, volatile overlays, logs). Creating one takes its
// name's lock; destroying it is safe to call twice and for a name already gone. Disposables made
// for calls are counted per caller and in total (admission.ts), and by default a disposable
// cannot make another one, so no domain can multiply itself through `@dispvm` calls. A call is
// given one of its template's preloaded disposables when the pool (dispvm-preload.ts) has one,
// and a new one otherwise; preloaded ones count in the total from the moment they are made.
import { rmSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import { formatRuleApi } from "@qvm/protocol/contracts";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import type { VolumeStore } from "../storage/volumes.js";
import { checkDispvmCaller, checkDispvmTotal, defaultLimits, type ResourceLimits } from "./admission.js";
import type { DomainPaths } from "./paths.js";
import { PRELOAD_MAX } from "./preload-marks.js";
import type { DomainRegistry } from "./registry.js";
import type { DomainRunner } from "./runner.js";

/** Disposable names are dispN with N in 1..MAX_DISPID (Qubes' dispid range is similar). */
const MAX_DISPID = 9999;
const NAME_TRIES = 100;
/** Who preloaded disposables are counted for until handed out (not a domain name: no caller is it). */
export const PRELOAD_CALLER = "@preload";

/** One preloaded disposable taken for a caller; no other caller can be given it. */
export interface PreloadClaim {
  name: string;
  /** Unpauses it and makes it the caller's; false when it cannot be (it is destroyed then). */
  deliver(): Promise<boolean>;
}

/** The preloaded disposables, as disposables are handed out from them. */
export interface PreloadPool {
  /** Takes one of `template`'s preloaded disposables, at once; undefined when it has none. */
  claim(template: string): PreloadClaim | undefined;
  /** The template of `name` while it is a preload not yet in use; undefined otherwise. */
  preloadOf(name: string): string | undefined;
}

export interface DispVmDeps {
  registry: DomainRegistry;
  volumes: VolumeStore;
  runner: DomainRunner;
  locks: KeyedMutex;
  /** A number in [0, 1), as Math.random; injected so tests can name disposables. */
  random: () => number;
  /** Where logs live: a disposable's go with it. */
  paths: DomainPaths;
  /** Caps on disposables; defaults: defaultLimits(). */
  limits?: ResourceLimits;
}

export class DispVms {
  /** Disposables made for calls (or preloaded) and not yet destroyed, by name: who asked for each (dom0 for the admin). */
  private readonly alive = new Map<string, string>();
  private readonly limits: ResourceLimits;
  private pool: PreloadPool | undefined;

  constructor(private readonly deps: DispVmDeps) {
    this.limits = deps.limits ?? defaultLimits();
  }

  /** Hands out preloaded disposables from `pool` from now on. */
  usePool(pool: PreloadPool): void {
    this.pool = pool;
  }

  /**
   * A disposable of a template for disposables ("" or "@default": the global default_dispvm)
   * for `source`, the domain whose call asks for it (dom0: the admin): a preloaded one when the
   * template has one ready or booting, else a new dispNNNN. Refused when `source` is a
   * disposable (unless allowed) or a cap is reached.
   */
  async create(template: string, source: string): Promise<string> {
    const { registry } = this.deps;
    checkDispvmCaller(this.limits, source, registry.store.get(source)?.class === "DispVM", this.alive);
    const dvm = this.templateOf(template);
    const claim = this.pool?.claim(dvm);
    if (claim) {
      // The caller's from here on (it was counted in the total as a preload already).
      this.alive.set(claim.name, source);
      if (await claim.deliver()) return claim.name;
      checkDispvmCaller(this.limits, source, false, this.alive);
    }
    checkDispvmTotal(this.limits, this.alive);
    return this.define(dvm, source, {});
  }

  /** A new disposable of `template` for the pool, counted in the total, with the features it starts with. */
  async createPreload(template: string, features: Record<string, string>): Promise<string> {
    checkDispvmTotal(this.limits, this.alive);
    return this.define(this.templateOf(template), PRELOAD_CALLER, features);
  }

  /** A preloaded disposable an earlier qvmd left, taken back by the pool: counted again. */
  adoptPreload(name: string): void {
    this.alive.set(name, PRELOAD_CALLER);
  }

  /**
   * Refuses to run anything in a preloaded disposable not yet handed out: it is kept untouched
   * for the next caller of its template, so no one may reach it by name.
   */
  checkUsable(name: string): void {
    const dvm = this.pool?.preloadOf(name);
    if (dvm === undefined) return;
    throw new QvmError(
      "FAILED_PRECONDITION",
      `${name} is a preloaded disposable of ${dvm}, kept paused for the next disposable asked of ${dvm}, and cannot be used by name: ` +
        `run \`qvm run --dispvm=${dvm} -- CMD\` (or call @dispvm:${dvm}), or remove it with \`qvm features ${dvm} ${PRELOAD_MAX} 0\``,
    );
  }

  /**
   * Gives a disposable its template's firewall as it is now (Qubes copies the template's rules
   * into each disposable): a preloaded one gets it again when handed out, so rules changed on the
   * template while it waited apply to it. Announced (firewall-changed) only when they differ.
   */
  applyTemplateFirewall(name: string): void {
    const { registry } = this.deps;
    const want = registry.firewall(String(registry.get(name).props.template ?? ""));
    const text = (rules: typeof want) => JSON.stringify(rules.map((r) => formatRuleApi(r)));
    if (text(want) !== text(registry.firewall(name))) registry.setFirewall(name, want);
  }

  /** Kills a disposable if it runs and removes every trace of it: its record, overlays and logs. */
  destroy(name: string): Promise<void> {
    const { registry, volumes, runner, locks, paths } = this.deps;
    return locks
      .run(name, async () => {
        if (!registry.store.get(name)) return;
        if (runner.isRunning(name)) await runner.running(name).kill().catch(() => {});
        registry.remove(name);
        volumes.remove(name);
        rmSync(paths.logDirOf(name), { recursive: true, force: true });
      })
      .finally(() => this.alive.delete(name));
  }

  /** The template for disposables meant by `template` ("" or "@default": default_dispvm). */
  private templateOf(template: string): string {
    const dvm = template && template !== "@default" ? template : String(this.deps.registry.store.globals().default_dispvm ?? "");
    if (!dvm) throw new QvmError("INVALID_ARGUMENT", "no template for disposables given and no default_dispvm set: `qvm prefs --global default_dispvm NAME`");
    return dvm;
  }

  /** The template's rules in force now, as stored lines; undefined when it never set any (accept all). */
  private templateFirewall(dvm: string): string[] | undefined {
    const { registry } = this.deps;
    return registry.store.get(dvm)?.firewall === undefined ? undefined : registry.firewall(dvm).map((r) => formatRuleApi(r));
  }

  /** Defines dispNNNN of `dvm`, counted for `source` before anything awaits, so concurrent calls see it. */
  private define(dvm: string, source: string, features: Record<string, string>): Promise<string> {
    const { registry, locks } = this.deps;
    let name = "";
    for (let i = 0; i < NAME_TRIES && (!name || registry.store.get(name) || this.alive.has(name)); i++) name = `disp${1 + Math.floor(this.deps.random() * MAX_DISPID)}`;
    if (registry.store.get(name) || this.alive.has(name)) throw new QvmError("RESOURCE_EXHAUSTED", "no free disposable name found; remove unused disposables");
    this.alive.set(name, source);
    return locks
      .run(name, () => {
        const label = String(registry.get(dvm).props.label ?? "red");
        const record = registry.prepareCreate({ name, klass: "DispVM", template: dvm, label });
        record.autoCleanup = true;
        const firewall = this.templateFirewall(dvm);
        if (firewall) record.firewall = firewall;
        Object.assign(record.features, features);
        registry.add(record, { disposableOf: dvm });
        return name;
      })
      .catch((err: unknown) => {
        this.alive.delete(name);
        throw err;
      });
  }
}
