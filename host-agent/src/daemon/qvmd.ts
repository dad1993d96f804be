// qvmd's core: the typed command surface every transport translates to (the gRPC admin API now,
// the web shell later). It owns the store, the running domains and the event feed; it knows
// nothing of gRPC.
import { QvmError } from "@qvm/protocol";
import type { ImageStore } from "@qvm/images";
import type { DomainRecord } from "../model/domain.js";
import { DomainStore } from "../store/domain-store.js";
import type { VmmDriver } from "../vmm/driver.js";
import { VolumeStore, type VolumeView } from "../storage/volumes.js";
import { EventBus } from "./events.js";
import { DomainRegistry, type CreateDomainInput } from "./registry.js";
import { DomainRunner, type PowerState } from "./runner.js";
import { AskBroker } from "../qrexec/prompts.js";
import { DEFAULT_ROUTER_LIMITS, QrexecRouter, type RouterLimits } from "../qrexec/router.js";
import { installDefaultPolicy } from "../qrexec/policy/default-policy.js";
import { policyDirOf, qrexecHost, systemFacts } from "./qrexec-host.js";
import { evaluate, type CallQuery, type Decision } from "../qrexec/policy/evaluate.js";
import { loadPolicy } from "../qrexec/policy/loader.js";
import { isValidServiceName, sanitizeArgument } from "../qrexec/service-command.js";
import { QREXEC_VSOCK_PORT } from "@qvm/protocol";

export interface QvmdOptions {
  dataDir: string;
  runtimeDir: string;
  images: ImageStore;
  driver: VmmDriver;
  log?: (msg: string) => void;
  /** qrexec limits: calls a domain may hold at once, time to send a request, time a person has to answer. */
  qrexec?: Partial<RouterLimits> & { askTimeoutMs?: number };
}

export const DEFAULT_ASK_TIMEOUT_MS = 60_000;

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
  readonly volumes: VolumeStore;
  readonly log: (msg: string) => void;
  readonly asks: AskBroker;
  readonly qrexec: QrexecRouter;

  constructor(readonly opts: QvmdOptions) {
    this.log = opts.log ?? (() => {});
    const store = DomainStore.open(opts.dataDir);
    this.volumes = new VolumeStore(opts.dataDir);
    this.registry = new DomainRegistry(store, this.events, (name) => this.runner.isRunning(name));
    this.asks = new AskBroker(opts.qrexec?.askTimeoutMs ?? DEFAULT_ASK_TIMEOUT_MS);
    const q = opts.qrexec ?? {};
    this.qrexec = new QrexecRouter(qrexecHost(this, this.asks), {
      maxCallsPerDomain: q.maxCallsPerDomain ?? DEFAULT_ROUTER_LIMITS.maxCallsPerDomain,
      requestTimeoutMs: q.requestTimeoutMs ?? DEFAULT_ROUTER_LIMITS.requestTimeoutMs,
    });
    // Each running domain's qrexec socket: where vhost-device-vsock delivers its calls to port 50.
    const hooks = {
      running: (name: string, dom: { vm: { info(): Promise<{ vsockPath: string }> } }) => {
        void dom.vm
          .info()
          .then(({ vsockPath }) => this.qrexec.attach(name, `${vsockPath}_${QREXEC_VSOCK_PORT}`))
          .catch((err: Error) => this.log(`${name}: cannot listen for qrexec calls: ${err.message}`));
      },
      gone: (name: string) => this.qrexec.detach(name),
    };
    this.runner = new DomainRunner({ ...opts, registry: this.registry, volumes: this.volumes, events: this.events, log: this.log, hooks });
  }

  /**
   * Registers built template images as TemplateVMs, removes volumes a crash left without a
   * domain, re-attaches running VMMs and commits the roots of templates that stopped meanwhile.
   */
  async boot(): Promise<void> {
    installDefaultPolicy(policyDirOf(this.opts.dataDir));
    for (const orphan of this.volumes.orphans((n) => this.registry.store.get(n) !== undefined)) {
      this.log(`removing volumes without a domain: ${orphan}`);
      this.volumes.remove(orphan);
    }
    await this.importTemplates();
    await this.runner.reattachAll();
    for (const rec of this.registry.list().filter((r) => r.autoCleanup)) {
      this.log(`${rec.name}: disposable left by an earlier qvmd; destroying it`);
      await this.destroyDisposable(rec.name).catch((err: Error) => this.log(`${rec.name}: cannot destroy: ${err.message}`));
    }
    // Templates first: the roots of domains created from them are made from theirs.
    const order = this.registry.list().sort((a, b) => Number(b.class === "TemplateVM") - Number(a.class === "TemplateVM"));
    for (const rec of order) {
      if (rec.class === "DispVM") continue;
      if (!this.volumes.exists(rec.name)) await this.createMissingVolumes(rec);
      else if (!this.runner.isRunning(rec.name) && rec.class !== "AppVM") await this.runner.commitRoot(rec.name);
    }
  }

  /**
   * A domain stored by a qvmd older than the volume model has no volumes: make them, its root
   * from where it came from (a template image, or a TemplateVM), so upgrading loses nothing.
   */
  private async createMissingVolumes(rec: DomainRecord): Promise<void> {
    let rootFrom: string | undefined;
    if (rec.class !== "AppVM" && rec.rootFrom) {
      rootFrom = this.registry.store.get(rec.rootFrom) && rec.rootFrom !== rec.name ? this.volumes.files(rec.rootFrom).root : undefined;
      if (!rootFrom) {
        try {
          rootFrom = this.opts.images.template(rec.rootFrom).root;
        } catch {
          // no such image any more: the root starts empty, as for a TemplateVM created without one
        }
      }
    }
    try {
      await this.volumes.create(rec.name, rec.class, { rootFrom });
      this.log(`${rec.name}: made the volumes it lacked (stored by an older qvmd)`);
    } catch (err) {
      this.log(`${rec.name}: has no volumes and they cannot be made: ${(err as Error).message}`);
    }
  }

  /** Registers each built template image without a TemplateVM as one (its root: the image, hard-linked). */
  async importTemplates(): Promise<string[]> {
    const registered: string[] = [];
    for (const t of this.opts.images.listTemplates()) {
      await this.runner.locks.run(t.manifest.name, async () => {
        const record = this.registry.templateImageRecord(t.manifest.name);
        if (!record) return;
        try {
          await this.volumes.create(record.name, "TemplateVM", { rootFrom: t.root });
          this.registry.add(record);
          this.registry.adoptDefaultTemplate(record.name);
          registered.push(record.name);
          this.log(`registered TemplateVM ${record.name} from its built image`);
        } catch (err) {
          this.volumes.remove(record.name);
          this.log(`cannot register template image ${t.manifest.name}: ${(err as Error).message}`);
        }
      });
    }
    return registered;
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

  /** Validates, makes the volumes, then stores the domain: a failure at any step leaves nothing. */
  create(input: CreateDomainInput): Promise<DomainView> {
    return this.runner.locks.run(String(input.name), async () => {
      const record = this.registry.prepareCreate(input);
      const rootFrom = record.rootFrom ? this.volumes.files(record.rootFrom).root : undefined;
      await this.volumes.create(record.name, record.class, { rootFrom });
      try {
        return this.describe(this.registry.add(record));
      } catch (err) {
        this.volumes.remove(record.name);
        throw err;
      }
    });
  }

  clone(source: string, name: string): Promise<DomainView> {
    if (source === name) return Promise.reject(new QvmError("INVALID_ARGUMENT", "the clone needs a name different from its source"));
    return this.runner.locks.run([source, name], async () => {
      const record = this.registry.prepareClone(source, name);
      if (this.runner.isRunning(source)) throw new QvmError("FAILED_PRECONDITION", `${source} is running: shut it down before cloning it`);
      await this.volumes.clone(source, name);
      try {
        return this.describe(this.registry.add(record, { clonedFrom: source }));
      } catch (err) {
        this.volumes.remove(name);
        throw err;
      }
    });
  }

  remove(name: string): Promise<void> {
    return this.runner.locks.run(name, () => {
      this.registry.remove(name);
      this.volumes.remove(name);
    });
  }

  setProperty(domain: string, name: string, value: string) {
    return this.runner.locks.run(domain || "@global", () => this.registry.setProperty(domain, name, value));
  }

  resetProperty(domain: string, name: string) {
    return this.runner.locks.run(domain || "@global", () => this.registry.resetProperty(domain, name));
  }

  // ---- disposables ------------------------------------------------------------------------------

  /** Defines dispNNNN from a template for disposables ("" or "@default": the global default_dispvm). */
  createDisposable(template: string): Promise<string> {
    const dvm = template && template !== "@default" ? template : String(this.registry.store.globals().default_dispvm ?? "");
    if (!dvm) throw new QvmError("INVALID_ARGUMENT", "no template for disposables given and no default_dispvm set: `qvm prefs --global default_dispvm NAME`");
    let name = "";
    for (let i = 0; i < 100 && (!name || this.registry.store.get(name)); i++) name = `disp${1 + Math.floor(Math.random() * 9999)}`;
    return this.runner.locks.run(name, () => {
      const label = String(this.registry.get(dvm).props.label ?? "red");
      const record = this.registry.prepareCreate({ name, klass: "DispVM", template: dvm, label });
      record.autoCleanup = true;
      this.registry.add(record, { disposableOf: dvm });
      return name;
    });
  }

  /** Kills a disposable if it runs and removes every trace of it (store entry, runtime files). */
  destroyDisposable(name: string): Promise<void> {
    return this.runner.locks.run(name, async () => {
      if (!this.registry.store.get(name)) return;
      if (this.runner.isRunning(name)) await this.runner.running(name).kill().catch(() => {});
      this.registry.remove(name);
      this.volumes.remove(name);
    });
  }

  // ---- volumes ---------------------------------------------------------------------------------

  async listVolumes(domain: string): Promise<Array<VolumeView & { revisionsToKeep: number }>> {
    const rec = this.registry.get(domain);
    const views = await this.volumes.list(rec.name, rec.class, rec.class === "AppVM" ? this.runner.templateRootOf(rec) : undefined);
    return views.map((v) => ({ ...v, revisionsToKeep: v.name === "root" && rec.class === "AppVM" ? 0 : this.registry.revisionsToKeep(rec, v.name as "root" | "private") }));
  }

  configVolume(domain: string, volume: string, property: string, value: string): Promise<void> {
    return this.runner.locks.run(domain, () => this.registry.configVolume(domain, volume, property, value));
  }

  revertVolume(domain: string, volume: string, revision: string): Promise<string> {
    return this.runner.locks.run(domain, async () => {
      const rec = this.registry.get(domain);
      if (this.runner.isRunning(domain)) throw new QvmError("FAILED_PRECONDITION", `${domain} is running: shut it down before reverting a volume`);
      let done: string;
      if (volume === "private") done = await this.volumes.revertPrivate(domain, revision || undefined);
      else if (volume === "root" && rec.class !== "AppVM") done = this.volumes.revertRoot(domain, revision || undefined);
      else if (volume === "root") throw new QvmError("INVALID_ARGUMENT", `${domain}:root is a snapshot of its template's root: revert the template's instead`);
      else throw new QvmError("INVALID_ARGUMENT", `no volume "${volume}"; volumes with revisions: private, root (templates and standalones)`);
      this.events.publish("volume-revert", domain, { volume, revision: done });
      return done;
    });
  }

  resizeVolume(domain: string, volume: string, sizeBytes: number): Promise<void> {
    return this.runner.locks.run(domain, async () => {
      this.registry.get(domain);
      if (volume !== "private") throw new QvmError("INVALID_ARGUMENT", `only the private volume can be resized (not "${volume}")`);
      if (this.runner.isRunning(domain)) await this.runner.growPrivateLive(domain, sizeBytes);
      else await this.volumes.resizePrivate(domain, sizeBytes);
      this.events.publish("volume-resize", domain, { volume, sizeBytes: String(sizeBytes) });
    });
  }

  // ---- qrexec policy ------------------------------------------------------------------------

  /** What the policy decides for one call (`qvm policy check`); a broken policy throws, naming file:line. */
  checkPolicy(q: CallQuery): Decision {
    if (!isValidServiceName(q.service)) throw new QvmError("INVALID_ARGUMENT", `invalid service name ${JSON.stringify(q.service)}: use letters, digits, "_", "." and "-"`);
    if (q.source !== "dom0" && q.source !== "@adminvm") this.registry.get(q.source);
    const rules = loadPolicy(policyDirOf(this.opts.dataDir));
    return evaluate(rules, { ...q, argument: sanitizeArgument(q.argument) }, systemFacts(this));
  }

  /** qvmd is exiting: VMMs keep running and the next qvmd takes them back. */
  async close(): Promise<void> {
    await this.runner.detachAll();
    this.qrexec.detachAll();
  }
}
