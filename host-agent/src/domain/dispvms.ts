// Disposables: a DispVM record made from an AppVM with template_for_dispvms, and its removal
// with every trace (VM, store entry, volumes, volatile overlays, logs). Creating one takes its
// name's lock; destroying it is safe to call twice and for a name already gone. Disposables made
// for calls are counted per caller and in total (admission.ts), and by default a disposable
// cannot make another one, so no domain can multiply itself through `@dispvm` calls.
import { rmSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import type { VolumeStore } from "../storage/volumes.js";
import { checkDispvmAdmission, defaultLimits, type ResourceLimits } from "./admission.js";
import type { DomainPaths } from "./paths.js";
import type { DomainRegistry } from "./registry.js";
import type { DomainRunner } from "./runner.js";

/** Disposable names are dispN with N in 1..MAX_DISPID (Qubes' dispid range is similar). */
const MAX_DISPID = 9999;
const NAME_TRIES = 100;

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
  /** Disposables made for calls and not yet destroyed, by name: who asked for each (dom0 for the admin). */
  private readonly alive = new Map<string, string>();
  private readonly limits: ResourceLimits;

  constructor(private readonly deps: DispVmDeps) {
    this.limits = deps.limits ?? defaultLimits();
  }

  /**
   * Defines dispNNNN from a template for disposables ("" or "@default": the global
   * default_dispvm) for `source`, the domain whose call asks for it (dom0: the admin). Refused
   * when `source` is a disposable (unless allowed) or a cap is reached.
   */
  create(template: string, source: string): Promise<string> {
    const { registry, locks } = this.deps;
    checkDispvmAdmission(this.limits, source, registry.store.get(source)?.class === "DispVM", this.alive);
    const dvm = template && template !== "@default" ? template : String(registry.store.globals().default_dispvm ?? "");
    if (!dvm) throw new QvmError("INVALID_ARGUMENT", "no template for disposables given and no default_dispvm set: `qvm prefs --global default_dispvm NAME`");
    let name = "";
    for (let i = 0; i < NAME_TRIES && (!name || registry.store.get(name) || this.alive.has(name)); i++) name = `disp${1 + Math.floor(this.deps.random() * MAX_DISPID)}`;
    if (registry.store.get(name) || this.alive.has(name)) throw new QvmError("RESOURCE_EXHAUSTED", "no free disposable name found; remove unused disposables");
    // Counted from here on, before anything awaits: concurrent calls see it.
    this.alive.set(name, source);
    return locks.run(name, () => {
      const label = String(registry.get(dvm).props.label ?? "red");
      const record = registry.prepareCreate({ name, klass: "DispVM", template: dvm, label });
      record.autoCleanup = true;
      registry.add(record, { disposableOf: dvm });
      return name;
    }).catch((err: unknown) => {
      this.alive.delete(name);
      throw err;
    });
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
}
