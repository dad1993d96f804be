// Disposables: a DispVM record made from an AppVM with template_for_dispvms, and its removal
// with every trace (VM, store entry, volumes, runtime files). Creating one takes its name's lock;
// destroying it is safe to call twice and for a name already gone.
import { QvmError } from "@qvm/protocol";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import type { VolumeStore } from "../storage/volumes.js";
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
}

export class DispVms {
  constructor(private readonly deps: DispVmDeps) {}

  /** Defines dispNNNN from a template for disposables ("" or "@default": the global default_dispvm). */
  create(template: string): Promise<string> {
    const { registry, locks } = this.deps;
    const dvm = template && template !== "@default" ? template : String(registry.store.globals().default_dispvm ?? "");
    if (!dvm) throw new QvmError("INVALID_ARGUMENT", "no template for disposables given and no default_dispvm set: `qvm prefs --global default_dispvm NAME`");
    let name = "";
    for (let i = 0; i < NAME_TRIES && (!name || registry.store.get(name)); i++) name = `disp${1 + Math.floor(this.deps.random() * MAX_DISPID)}`;
    if (registry.store.get(name)) throw new QvmError("RESOURCE_EXHAUSTED", "no free disposable name found; remove unused disposables");
    return locks.run(name, () => {
      const label = String(registry.get(dvm).props.label ?? "red");
      const record = registry.prepareCreate({ name, klass: "DispVM", template: dvm, label });
      record.autoCleanup = true;
      registry.add(record, { disposableOf: dvm });
      return name;
    });
  }

  /** Kills a disposable if it runs and removes every trace of it. */
  destroy(name: string): Promise<void> {
    const { registry, volumes, runner, locks } = this.deps;
    return locks.run(name, async () => {
      if (!registry.store.get(name)) return;
      if (runner.isRunning(name)) await runner.running(name).kill().catch(() => {});
      registry.remove(name);
      volumes.remove(name);
    });
  }
}
