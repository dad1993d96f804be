// qvmd's core: the typed command surface every transport translates to (the gRPC admin API now,
// the web shell later). It owns the store, the running domains and the event feed; it knows
// nothing of gRPC.
import { QvmError } from "@qvm/protocol";
import type { ImageStore } from "@qvm/images";
import type { DomainRecord } from "../model/domain.js";
import { DomainStore } from "../store/domain-store.js";
import type { VmmDriver } from "../vmm/driver.js";
import { EventBus } from "./events.js";
import { DomainRegistry, type CreateDomainInput } from "./registry.js";
import { DomainRunner, type PowerState } from "./runner.js";

export interface QvmdOptions {
  dataDir: string;
  runtimeDir: string;
  images: ImageStore;
  driver: VmmDriver;
  log?: (msg: string) => void;
}

export interface DomainView {
  name: string;
  klass: string;
  state: PowerState;
  label: string;
  template: string;
  netvm: string;
  tags: string[];
  createdAt: string;
  lastStopReason: string;
  vmmPid: number;
}

export class Qvmd {
  readonly events = new EventBus();
  readonly registry: DomainRegistry;
  readonly runner: DomainRunner;
  readonly log: (msg: string) => void;

  constructor(readonly opts: QvmdOptions) {
    this.log = opts.log ?? (() => {});
    const store = DomainStore.open(opts.dataDir);
    this.registry = new DomainRegistry(store, this.events, (name) => this.runner.isRunning(name));
    this.runner = new DomainRunner({ ...opts, registry: this.registry, events: this.events, log: this.log });
  }

  /** Registers built template images, re-attaches running VMMs, then starts autostart domains. */
  async boot(): Promise<void> {
    for (const t of this.opts.images.listTemplates()) {
      try {
        if (this.registry.registerTemplateImage(t.manifest.name)) this.log(`registered TemplateVM ${t.manifest.name} from its built image`);
      } catch (err) {
        this.log(`cannot register template image ${t.manifest.name}: ${(err as Error).message}`);
      }
    }
    await this.runner.reattachAll();
  }

  describe(rec: DomainRecord): DomainView {
    const r = this.registry;
    return {
      name: rec.name,
      klass: rec.class,
      state: this.runner.state(rec.name),
      label: String(rec.props.label ?? ""),
      template: rec.class === "AppVM" ? String(r.resolve(rec, "template")) : "",
      netvm: String(r.resolve(rec, "netvm")),
      tags: [...rec.tags].sort(),
      createdAt: rec.createdAt,
      lastStopReason: this.runner.lastStopReason(rec.name),
      vmmPid: this.runner.vmmPid(rec.name),
    };
  }

  list(): DomainView[] {
    return this.registry.list().map((r) => this.describe(r));
  }

  get(name: string): DomainView {
    return this.describe(this.registry.get(name));
  }

  create(input: CreateDomainInput): Promise<DomainView> {
    return this.runner.locks.run(String(input.name), () => this.describe(this.registry.create(input)));
  }

  clone(source: string, name: string): Promise<DomainView> {
    if (source === name) return Promise.reject(new QvmError("INVALID_ARGUMENT", "the clone needs a name different from its source"));
    return this.runner.locks.run([source, name], () => this.describe(this.registry.clone(source, name)));
  }

  remove(name: string): Promise<void> {
    return this.runner.locks.run(name, () => this.registry.remove(name));
  }

  setProperty(domain: string, name: string, value: string) {
    return this.runner.locks.run(domain || "@global", () => this.registry.setProperty(domain, name, value));
  }

  resetProperty(domain: string, name: string) {
    return this.runner.locks.run(domain || "@global", () => this.registry.resetProperty(domain, name));
  }

  /** qvmd is exiting: VMMs keep running and the next qvmd takes them back. */
  async close(): Promise<void> {
    await this.runner.detachAll();
  }
}
