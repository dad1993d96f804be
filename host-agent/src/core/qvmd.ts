// qvmd's core: the typed command surface every transport translates to (the gRPC admin API; the
// web shell and CLI reach it through that API). Each command validates what it is given, takes
// the locks it needs itself and returns plain data or a session; nothing else in qvmd is called
// by a transport. It is built from injected parts by the composition root (compose.ts).
import { rmSync } from "node:fs";
import type { Duplex } from "node:stream";
import { QvmError } from "@qvm/protocol";
import type { WindowTarget, WindowView } from "../domain/windows.js";
import { formatRuleApi, parseRuleApi, type DomainClassWord, type PowerStateWord } from "@qvm/protocol/contracts";
import type { PciDeviceInfo } from "../vmm/pci/sysfs.js";
import type { EventListener } from "../base/events.js";
import type { DomainRecord } from "../model/domain.js";
import { KEY_FILE, type OrphanVolumes, type VolumeView } from "../storage/volumes.js";
import type { VolumeKey } from "../storage/volume-key.js";
import { validateDomainName } from "../model/names.js";
import type { LaunchTarget } from "../domain/launcher.js";
import { checkPreloadFeature } from "../domain/preload-marks.js";
import type { ResourceLimits } from "../domain/admission.js";
import type { CreateDomainInput, PropertyView } from "../domain/registry.js";
import type { Prompt } from "../qrexec/prompts.js";
import { systemFacts } from "../qrexec/host.js";
import { evaluate, type CallQuery, type Decision } from "../qrexec/policy/evaluate.js";
import { ADMIN_DOMAIN_NAME, isValidServiceName, sanitizeArgument, serviceCommand } from "../qrexec/service-command.js";
import { ConsoleSession, ExecSession } from "./sessions.js";
import { bootCore } from "./boot.js";
import type { QvmdParts } from "./parts.js";
import type { ClipboardState, CopyFrom, PasteInto } from "../clipboard/global-clipboard.js";
import type { UsbDeviceView } from "../usb/usb-devices.js";
import type { UsbPlugRequest, UsbPlugView } from "../domain/usb-plugs.js";
import { backupDomains, restoreBackup, verifyBackup, type BackupContents, type BackupDomainsResult, type RestoreBackupResult, type VaultProgress } from "../vault/index.js";

export interface DomainView {
  name: string;
  class: DomainClassWord;
  state: PowerStateWord;
  label: string;
  template: string;
  netvm: string;
  tags: string[];
  createdAt: string;
  lastStopReason: string;
  vmmPid: number;
  /** While running: "kvm", or "tcg" (software emulation: no hardware isolation); "" when halted. */
  accel: string;
  /** A preloaded disposable not yet handed out (Qubes' is_preload): nothing runs in it by name. */
  isPreload: boolean;
}

export interface DaemonInfo {
  version: string;
  pid: number;
  dataDir: string;
  runtimeDir: string;
  imagesDir: string;
  /** "kvm" or "tcg": what new domains run under. */
  accel: string;
}

export type VolumeListing = VolumeView & { revisionsToKeep: number };

/** How to register kept-aside volumes as a domain again; "" fields are decided from what they hold. */
export interface RestoreOrphanInput {
  id: string;
  /** "": the name they were found under. */
  name: string;
  /** "": StandaloneVM when they hold a root, AppVM (which needs `template`) when not. */
  klass: DomainClassWord | "";
  template: string;
  /** "": red, since nothing says how far the domain was trusted. */
  label: string;
}

/** Lock key of the kept-aside volumes (not a valid domain name). */
const ORPHANS_LOCK = "@orphans";

/** What to run: a program (argv or a shell line) or, as dom0 calling, a qrexec service. */
export type ExecWhat = { argv: string[] } | { shell: string } | { service: string; argument: string };

export interface ExecCommand {
  target: LaunchTarget;
  what: ExecWhat;
  noAutostart: boolean;
  /** "": the domain's default_user. */
  user: string;
  cwd: string;
  env: Record<string, string>;
  pty?: { rows: number; cols: number };
}

export interface CreateBackupInput {
  file: string;
  domains: string[];
  passphrase: string;
  includeRoot: boolean;
  /** "" for a full backup. */
  incrementalFrom: string;
  chain: string[];
}

export interface RestoreBackupInput {
  file: string;
  chain: string[];
  passphrase: string;
  /** Empty: all the backup holds. */
  domains: string[];
  renameConflicts: boolean;
}

/** What a backup command reports while it runs. */
export interface BackupListener {
  onProgress(p: VaultProgress): void;
  onNote(message: string): void;
  /** Aborted when the caller goes away: the command stops between blocks, leaving nothing half-made. */
  signal?: AbortSignal;
}

/** Lock key of the global properties. */
const GLOBAL_LOCK = "@global";
/** Lock key of every PCI assignment: a device (and an IOMMU group) goes to one domain, checked across all of them. */
const PCI_LOCK = "@pci";

/** A host PCI device as `qvm pci ls` shows it, or an assignment of one the host does not have. */
export type PciDeviceView = PciDeviceInfo & {
  /** The domain it is assigned to; "" for none. */
  assignedTo: string;
  /** False: assigned, but the host has no such device. */
  present: boolean;
};

/** What an assignment change did: the canonical BDFs, and whether it waits for the domain's next start. */
export interface PciChange {
  devices: string[];
  nextStart: boolean;
}

export class Qvmd {
  constructor(private readonly p: QvmdParts) {}

  get log(): (msg: string) => void {
    return this.p.log;
  }

  /** Migrations, template registration, re-attach and orphan cleanup (see boot.ts); then the firewall expiry timers and the preloading of disposables. */
  async boot(): Promise<void> {
    await bootCore(this.p, () => this.importTemplates());
    this.p.firewallExpiry.start();
    this.p.preloads.start();
  }

  /** Starts the autostart domains; failures are logged. */
  autostart(): Promise<void> {
    return this.p.runner.autostart();
  }

  /** qvmd is exiting: VMs keep running and the next qvmd takes them back. */
  async close(): Promise<void> {
    // Paused preloads stay for the next qvmd, which takes them back.
    this.p.preloads.close();
    this.p.firewallExpiry.close();
    this.p.network.close();
    // USB attachments end with qvmd (their Exec streams do); the backends take the devices back
    // while their agents can still be reached.
    await this.p.usb.close();
    await this.p.runner.detachAll();
    this.p.router.detachAll();
  }

  /** What may run at once, as qvmd was started with. */
  limits(): ResourceLimits {
    return { ...this.p.limits };
  }

  info(): DaemonInfo {
    const { version, dataDir, runtimeDir, images } = this.p;
    return { version, pid: process.pid, dataDir, runtimeDir, imagesDir: images.root, accel: this.p.accel() };
  }

  // ---- domains -----------------------------------------------------------------------------

  list(): DomainView[] {
    return this.p.registry.list().map((r) => this.describe(r));
  }

  get(name: string): DomainView {
    return this.describe(this.p.registry.get(name));
  }

  /**
   * Validates, makes the volumes, then stores the domain: a failure at any step leaves nothing.
   * `passphrase`: what an encrypted domain's (encrypted=True) private volume is encrypted under.
   */
  create(input: CreateDomainInput, passphrase?: string): Promise<DomainView> {
    const { locks, registry, volumes } = this.p;
    return locks.run(input.name, async () => {
      const record = registry.prepareCreate(input);
      const encrypted = record.props.encrypted === true;
      if (passphrase) checkPassphrase(passphrase);
      if (encrypted && !passphrase) throw new QvmError("PASSPHRASE_REQUIRED", `${record.name} is to be encrypted: give the passphrase to encrypt it under (\`qvm create\` asks for it)`);
      if (!encrypted && passphrase) throw new QvmError("INVALID_ARGUMENT", `a passphrase was given, but ${record.name} is not to be encrypted: add --prop encrypted=True`);
      const rootFrom = record.rootFrom ? volumes.files(record.rootFrom).root : undefined;
      await volumes.create(record.name, record.class, { rootFrom, ...(encrypted ? { passphrase } : {}) });
      try {
        return this.describe(registry.add(record));
      } catch (err) {
        volumes.remove(record.name);
        throw err;
      }
    });
  }

  clone(source: string, name: string): Promise<DomainView> {
    const { locks, registry, volumes, runner } = this.p;
    if (source === name) return Promise.reject(new QvmError("INVALID_ARGUMENT", "the clone needs a name different from its source"));
    return locks.run([source, name], async () => {
      const record = registry.prepareClone(source, name);
      if (runner.isRunning(source)) throw new QvmError("FAILED_PRECONDITION", `${source} is running: shut it down before cloning it`);
      await volumes.clone(source, name);
      try {
        return this.describe(registry.add(record, { clonedFrom: source }));
      } catch (err) {
        volumes.remove(name);
        throw err;
      }
    });
  }

  /** Removes the domain, its volumes and its logs; a template for disposables takes its preloaded disposables with it. */
  remove(name: string): Promise<void> {
    return this.p.locks.run(name, async () => {
      this.p.registry.get(name);
      const resume = await this.p.preloads.drain(name);
      try {
        this.p.registry.remove(name);
      } finally {
        resume();
      }
      this.p.volumes.remove(name);
      rmSync(this.p.paths.logDirOf(name), { recursive: true, force: true });
    });
  }

  /** Registers each built template image without a TemplateVM as one (its root: the image, hard-linked). */
  async importTemplates(): Promise<string[]> {
    const { images, locks, registry, volumes, log } = this.p;
    const registered: string[] = [];
    for (const t of images.listTemplates()) {
      await locks.run(t.manifest.name, async () => {
        const record = registry.templateImageRecord(t.manifest.name, t.manifest.init);
        if (!record) return;
        try {
          await volumes.create(record.name, "TemplateVM", { rootFrom: t.root });
          registry.add(record);
          registry.adoptDefaultTemplate(record.name);
          registered.push(record.name);
          log(`registered TemplateVM ${record.name} from its built image`);
        } catch (err) {
          volumes.remove(record.name);
          log(`cannot register template image ${t.manifest.name}: ${(err as Error).message}`);
        }
      });
    }
    return registered;
  }

  // ---- properties, features, tags ("" as the domain: the global properties) -----------------

  properties(domain: string): PropertyView[] {
    return this.p.registry.properties(domain);
  }

  getProperty(domain: string, name: string): PropertyView {
    return this.p.registry.getProperty(domain, name);
  }

  setProperty(domain: string, name: string, value: string): Promise<PropertyView> {
    return this.p.locks.run(domain || GLOBAL_LOCK, () => {
      if (domain && name === "netvm") this.checkLiveNetvm(domain, value);
      return this.p.registry.setProperty(domain, name, value);
    });
  }

  /** Qubes: a running domain's netvm may change only to one that runs (the link moves at once). */
  private checkLiveNetvm(domain: string, netvm: string): void {
    const { runner } = this.p;
    if (netvm && runner.isRunning(domain) && runner.state(netvm) !== "Running") {
      throw new QvmError("FAILED_PRECONDITION", `Cannot dynamically attach to stopped qube ${netvm}: start it first (\`qvm start ${netvm}\`), or shut ${domain} down`);
    }
  }

  resetProperty(domain: string, name: string): Promise<PropertyView> {
    return this.p.locks.run(domain || GLOBAL_LOCK, () => {
      if (domain && name === "netvm") {
        const rec = this.p.registry.get(domain);
        const fallback = this.p.registry.resolve({ ...rec, props: Object.fromEntries(Object.entries(rec.props).filter(([k]) => k !== "netvm")) }, "netvm");
        this.checkLiveNetvm(domain, String(fallback));
      }
      return this.p.registry.resetProperty(domain, name);
    });
  }

  features(domain: string): Record<string, string> {
    return this.p.registry.features(domain);
  }

  async setFeature(domain: string, name: string, value: string): Promise<void> {
    checkPreloadFeature(name, value);
    return this.p.locks.run(domain, () => this.p.registry.setFeature(domain, name, value));
  }

  async removeFeature(domain: string, name: string): Promise<void> {
    checkPreloadFeature(name);
    return this.p.locks.run(domain, () => this.p.registry.removeFeature(domain, name));
  }

  tags(domain: string): string[] {
    return this.p.registry.tags(domain);
  }

  addTag(domain: string, tag: string): Promise<void> {
    return this.p.locks.run(domain, () => this.p.registry.addTag(domain, tag));
  }

  removeTag(domain: string, tag: string): Promise<void> {
    return this.p.locks.run(domain, () => this.p.registry.removeTag(domain, tag));
  }

  // ---- firewall (Qubes' admin.vm.firewall.Get/Set/Reload; the netvm follows firewall-changed) --

  /** The rules in force, as admin API lines in order (expired ones left out). */
  getFirewall(domain: string): string[] {
    return this.p.registry.firewall(domain).map((r) => formatRuleApi(r));
  }

  /**
   * Replaces the rules with `lines` (admin API lines), all or nothing: every line is parsed
   * first, and the first bad one is refused naming its number and element, with nothing changed.
   */
  async setFirewall(domain: string, lines: readonly string[]): Promise<void> {
    this.p.registry.get(domain);
    const rules = lines.map((line, i) => {
      try {
        return parseRuleApi(line);
      } catch (err) {
        const why = (err as Error).message.replace(/^firewall rule: /, "");
        throw new QvmError("INVALID_ARGUMENT", `firewall rule ${i + 1} of ${lines.length}: ${why}; nothing was changed`);
      }
    });
    return this.p.locks.run(domain, () => this.p.registry.setFirewall(domain, rules));
  }

  /** Announces the rules again (firewall-changed), so the netvm applies them and resolves their names again. */
  reloadFirewall(domain: string): Promise<void> {
    return this.p.locks.run(domain, () => this.p.registry.reloadFirewall(domain));
  }

  // ---- PCI devices (Qubes' qvm-pci; stored with the domain, passed through at its next start) --

  /**
   * The host's PCI devices with the domain each is assigned to, and assignments of devices the
   * host does not have; only `domain`'s when given. `iommu` false: nothing can be passed through.
   */
  pciDevices(domain = ""): { devices: PciDeviceView[]; iommu: boolean } {
    const { registry, pci } = this.p;
    if (domain) registry.get(domain);
    const owners = new Map(registry.list().flatMap((r) => (r.pci ?? []).map((d): [string, string] => [d.bdf, r.name])));
    const present = pci.list().map((d): PciDeviceView => ({ ...d, assignedTo: owners.get(d.bdf) ?? "", present: true }));
    const seen = new Set(present.map((d) => d.bdf));
    const missing = [...owners].filter(([bdf]) => !seen.has(bdf)).map(([bdf, owner]): PciDeviceView => ({ ...absentDevice(bdf), assignedTo: owner, present: false }));
    const devices = [...present, ...missing].filter((d) => !domain || d.assignedTo === domain).sort((a, b) => a.bdf.localeCompare(b.bdf));
    return { devices, iommu: pci.iommuEnabled() };
  }

  /**
   * Assigns host devices to a domain, all or none (Qubes' `qvm-pci attach --persistent`; several
   * at once for an IOMMU group whose devices must go together): each is checked against the host
   * (IOMMU, device, viable group counting the others given, no other domain's), then they are
   * stored with the domain. microvm has no hot-plug, so only a persistent assignment exists and
   * the devices arrive at the domain's next start; a plain (live) attach is refused, naming
   * --persistent.
   */
  attachPci(domain: string, bdfs: readonly string[], persistent: boolean): Promise<PciChange> {
    const { locks, registry, runner, pci } = this.p;
    const given = [...new Set(bdfs)];
    return locks.run([domain, PCI_LOCK], () => {
      registry.get(domain);
      if (!persistent) {
        const restart = runner.state(domain) === "Halted" ? "" : `, so restart it (\`qvm shutdown --wait ${domain} && qvm start ${domain}\`)`;
        throw new QvmError(
          "FAILED_PRECONDITION",
          `a PCI device cannot be attached live (microvm has no hot-plug): assign it with \`qvm pci attach --persistent ${domain} ${given.join(" ")}\`; it arrives at ${domain}'s next start${restart}`,
        );
      }
      for (const bdf of given) {
        const owner = registry.pciOwner(bdf);
        if (owner === domain) throw new QvmError("ALREADY_EXISTS", `${bdf} is already assigned to ${domain}`);
        if (owner) throw new QvmError("FAILED_PRECONDITION", `${bdf} is assigned to ${owner}: a device goes to one domain; detach it there first (\`qvm pci detach ${owner} ${bdf}\`)`);
      }
      for (const bdf of given) pci.checkAssignable(bdf, domain, (other) => (given.includes(other) ? domain : registry.pciOwner(other)));
      registry.assignPci(domain, given);
      return { devices: given, nextStart: runner.state(domain) !== "Halted" };
    });
  }

  /** Removes assignments, all or none; a running domain keeps the devices until it stops, then the host gets them back. */
  detachPci(domain: string, bdfs: readonly string[]): Promise<PciChange> {
    const { locks, registry, runner } = this.p;
    const given = [...new Set(bdfs)];
    return locks.run([domain, PCI_LOCK], () => {
      registry.unassignPci(domain, given);
      return { devices: given, nextStart: runner.state(domain) !== "Halted" };
    });
  }

  // ---- USB devices (docs/usb.md; Qubes' qvm-usb: a backend's devices, attached over qubes.USB) --

  /** The devices of every running backend (or of `backend`), with who has each, and assignments not present. */
  usbDevices(backend = ""): UsbDeviceView[] {
    return this.p.usb.list(backend);
  }

  /** Attaches a backend's device to a running domain; `persistent` also assigns it (attached again at its starts). */
  async attachUsb(domain: string, backend: string, busid: string, persistent: boolean): Promise<UsbDeviceView> {
    this.p.dispvms.checkUsable(domain);
    return this.p.usb.attach(domain, backend, busid, persistent);
  }

  /** Detaches it on both sides and drops its assignment to `domain`. */
  detachUsb(domain: string, backend: string, busid: string): Promise<void> {
    return this.p.usb.detach(domain, backend, busid);
  }

  /** An emulated USB device for `domain` (a stick from a disk image, a keyboard, a tablet): stored, and live at once when its VMM can. */
  plugUsb(domain: string, req: UsbPlugRequest): Promise<UsbPlugView> {
    return this.p.usbPlugs.plug(domain, req);
  }

  unplugUsb(domain: string, id: string): Promise<void> {
    return this.p.usbPlugs.unplug(domain, id);
  }

  usbPlugs(domain: string): UsbPlugView[] {
    return this.p.usbPlugs.list(domain);
  }

  // ---- lifecycle (the runner takes the domain's lock) ---------------------------------------

  /** `passphrase`: an encrypted domain's (PASSPHRASE_REQUIRED without it). */
  async start(name: string, passphrase?: string): Promise<DomainView> {
    await this.p.runner.start(name, passphrase ? { passphrase: checkPassphrase(passphrase) } : {});
    return this.get(name);
  }

  shutdown(name: string, opts: { wait: boolean; force: boolean }): Promise<string> {
    return this.p.runner.shutdown(name, opts);
  }

  kill(name: string): Promise<void> {
    return this.p.runner.kill(name);
  }

  pause(name: string): Promise<void> {
    return this.p.runner.pause(name);
  }

  /** Refused for a preloaded disposable: unpausing it would let it run before anyone is handed it. */
  async unpause(name: string): Promise<void> {
    this.p.dispvms.checkUsable(name);
    return this.p.runner.unpause(name);
  }

  // ---- volumes -------------------------------------------------------------------------------

  async listVolumes(domain: string): Promise<VolumeListing[]> {
    const { registry, volumes, planner } = this.p;
    const rec = registry.get(domain);
    const views = await volumes.list(rec.name, rec.class, rec.class === "AppVM" ? planner.templateRootOf(rec) : undefined);
    return views.map((v) => ({ ...v, revisionsToKeep: v.name === "root" && rec.class === "AppVM" ? 0 : registry.revisionsToKeep(rec, v.name as "root" | "private") }));
  }

  configVolume(domain: string, volume: string, property: string, value: string): Promise<void> {
    return this.p.locks.run(domain, () => this.p.registry.configVolume(domain, volume, property, value));
  }

  /** The key of a halted encrypted domain's private volume for `use`, wiped after; none for others. */
  private async withVolumeKey<T>(domain: string, passphrase: string | undefined, use: (key: VolumeKey | undefined) => Promise<T>): Promise<T> {
    const key = this.p.volumes.needsPassphrase(this.p.registry.get(domain)) ? await this.p.volumes.unlock(domain, checkPassphrase(passphrase ?? "", true)) : undefined;
    try {
      return await use(key);
    } finally {
      key?.wipe();
    }
  }

  revertVolume(domain: string, volume: string, revision: string, passphrase?: string): Promise<string> {
    const { locks, registry, runner, volumes, events } = this.p;
    return locks.run(domain, async () => {
      const rec = registry.get(domain);
      if (runner.isRunning(domain)) throw new QvmError("FAILED_PRECONDITION", `${domain} is running: shut it down before reverting a volume`);
      let done: string;
      if (volume === "private") done = await this.withVolumeKey(domain, passphrase, (key) => volumes.revertPrivate(domain, revision || undefined, key));
      else if (volume === "root" && rec.class !== "AppVM") done = volumes.revertRoot(domain, revision || undefined);
      else if (volume === "root") throw new QvmError("INVALID_ARGUMENT", `${domain}:root is a snapshot of its template's root: revert the template's instead`);
      else throw new QvmError("INVALID_ARGUMENT", `no volume "${volume}"; volumes with revisions: private, root (templates and standalones)`);
      events.publish("volume-revert", domain, { volume, revision: done });
      return done;
    });
  }

  /** A new passphrase for a halted encrypted domain (VolumeStore.changePassphrase). */
  changePassphrase(domain: string, oldPassphrase: string, newPassphrase: string): Promise<void> {
    const { locks, registry, runner, volumes, log } = this.p;
    return locks.run(domain, async () => {
      registry.get(domain);
      if (runner.isRunning(domain)) throw new QvmError("FAILED_PRECONDITION", `${domain} is running: shut it down before changing its passphrase`);
      const { oldSlotsRemoved } = await volumes.changePassphrase(domain, checkPassphrase(oldPassphrase), checkPassphrase(newPassphrase));
      log(`${domain}: passphrase changed${oldSlotsRemoved ? "" : "; its old key slot could not be removed (a copy of the old key file would still open it)"}`);
    });
  }

  resizeVolume(domain: string, volume: string, sizeBytes: number, passphrase?: string): Promise<void> {
    const { locks, registry, runner, volumes, events } = this.p;
    return locks.run(domain, async () => {
      registry.get(domain);
      if (volume !== "private") throw new QvmError("INVALID_ARGUMENT", `only the private volume can be resized (not "${volume}")`);
      if (runner.isRunning(domain)) await runner.growPrivateLive(domain, sizeBytes);
      else await this.withVolumeKey(domain, passphrase, (key) => volumes.resizePrivate(domain, sizeBytes, key));
      events.publish("volume-resize", domain, { volume, sizeBytes: String(sizeBytes) });
    });
  }

  // ---- backups (vault/; docs/cli.md "qvm backup") ----------------------------------------------

  /** Backs domains up into a new file; each domain's lock is held only while its volumes are copied out. */
  createBackup(input: CreateBackupInput, listener: BackupListener): Promise<BackupDomainsResult> {
    const { dataDir, volumes, registry, runner, policyDir, locks } = this.p;
    return backupDomains({
      dataDir,
      store: registry.store,
      volumes,
      policyDir,
      names: input.domains,
      includeRoot: input.includeRoot,
      output: input.file,
      passphrase: input.passphrase,
      incrementalFrom: input.incrementalFrom ? { file: input.incrementalFrom, chain: input.chain } : undefined,
      isRunning: (name) => runner.isRunning(name),
      volumeKey: (name) => runner.volumeKey(name),
      withLock: (name, fn) => locks.run(name, fn),
      onProgress: (p) => listener.onProgress(p),
      onNote: (m) => listener.onNote(m),
      signal: listener.signal,
    });
  }

  verifyBackup(input: { file: string; chain: string[]; passphrase: string }, listener: BackupListener): Promise<BackupContents> {
    return verifyBackup({ ...input, onProgress: (p) => listener.onProgress(p), signal: listener.signal });
  }

  /** Verifies all of a backup, then restores its domains (stored in one write, announced as domain-add) and policy files. */
  restoreBackup(input: RestoreBackupInput, listener: BackupListener): Promise<RestoreBackupResult> {
    const { dataDir, volumes, registry, policyDir, locks, events, log } = this.p;
    const store = registry.store;
    return restoreBackup({
      dataDir,
      volumes,
      policyDir,
      file: input.file,
      chain: input.chain,
      passphrase: input.passphrase,
      names: input.domains,
      renameConflicts: input.renameConflicts,
      store: {
        get: (name) => store.get(name),
        list: () => store.list(),
        createAll: (records) => {
          store.createAll(records);
          for (const r of records) events.publish("domain-add", r.name, { class: r.class, restoredFrom: input.file });
          log(`restored ${records.map((r) => r.name).join(", ") || "no domains"} from ${input.file}`);
        },
      },
      withLocks: (names, fn) => locks.run(names, fn),
      onProgress: (p) => listener.onProgress(p),
      onNote: (m) => listener.onNote(m),
      signal: listener.signal,
    });
  }

  // ---- volumes without a domain (kept aside at qvmd start, never deleted automatically) -------

  orphanVolumes(): OrphanVolumes[] {
    return this.p.volumes.listOrphans();
  }

  /**
   * Registers kept-aside volumes as a domain again, with its root and private as they are. What
   * the store knew (class, template, properties) is gone: volumes with a root of their own become
   * a StandaloneVM (or a TemplateVM when asked); an AppVM's private alone needs its template
   * named, since which one it ran on is not recorded anywhere.
   */
  restoreOrphan(input: RestoreOrphanInput): Promise<DomainView> {
    const { volumes, registry, locks } = this.p;
    const orphan = volumes.orphan(input.id);
    const name = input.name || orphan.name;
    try {
      validateDomainName(name);
    } catch (err) {
      throw new QvmError("INVALID_ARGUMENT", `${input.id} was found under ${JSON.stringify(orphan.name)}: ${(err as Error).message}; restore it under another name (--as NAME)`);
    }
    return locks.run([ORPHANS_LOCK, name], async () => {
      const o = volumes.orphan(input.id); // still there once the lock is ours
      if (registry.store.get(name)) throw new QvmError("ALREADY_EXISTS", `a domain named ${name} exists: restore ${o.id} under another name (--as NAME)`);
      if (!o.hasPrivate) {
        throw new QvmError("FAILED_PRECONDITION", `${o.id} holds no private.qcow2 (${o.files.join(", ") || "nothing"}): not a domain's volumes, nothing to register; look at ${o.path} and purge it`);
      }
      const klass = input.klass || (o.hasRoot ? "StandaloneVM" : "AppVM");
      if (o.hasRoot && klass !== "StandaloneVM" && klass !== "TemplateVM") {
        throw new QvmError("INVALID_ARGUMENT", `${o.id} has a root volume of its own: restore it as a StandaloneVM (the default) or a TemplateVM, not a ${klass}`);
      }
      if (!o.hasRoot && klass !== "AppVM") {
        throw new QvmError("INVALID_ARGUMENT", `${o.id} has no root volume of its own, only an AppVM's private: restore it as an AppVM (--template TEMPLATE), not a ${klass}`);
      }
      if (klass === "AppVM" && !input.template) {
        const def = String(registry.store.globals().default_template ?? "");
        throw new QvmError(
          "FAILED_PRECONDITION",
          `${o.id} holds an AppVM's private volume and no root: which template it ran on is not recorded; name one with --template TEMPLATE${def ? ` (default_template is ${def})` : ""}`,
        );
      }
      const record = registry.prepareCreate({ name, klass, template: klass === "AppVM" ? input.template : undefined, label: input.label || "red" });
      // Encrypted volumes (a key file beside them) stay so: their domain asks the passphrase at start.
      if (o.files.includes(KEY_FILE)) record.props.encrypted = true;
      volumes.restoreOrphan(o.id, name);
      try {
        registry.add(record, { restoredFrom: o.id });
      } catch (err) {
        volumes.unrestoreOrphan(o.id, name);
        throw err;
      }
      this.p.log(`${name}: restored as a ${klass} from kept-aside volumes ${o.id}`);
      return this.describe(record);
    });
  }

  /** Deletes kept-aside volumes for good. */
  purgeOrphan(id: string): Promise<OrphanVolumes> {
    return this.p.locks.run(ORPHANS_LOCK, () => {
      const o = this.p.volumes.purgeOrphan(id);
      this.p.log(`purged kept-aside volumes ${o.id} (${o.files.join(", ") || "empty"})`);
      return o;
    });
  }

  // ---- qrexec policy -------------------------------------------------------------------------

  /** What the policy decides for one call (`qvm policy check`); a broken policy throws, naming file:line. */
  checkPolicy(q: CallQuery): Decision {
    if (!isValidServiceName(q.service)) throw new QvmError("INVALID_ARGUMENT", `invalid service name ${JSON.stringify(q.service)}: use letters, digits, "_", "." and "-"`);
    if (q.source !== ADMIN_DOMAIN_NAME && q.source !== "@adminvm") this.p.registry.get(q.source);
    const rules = this.p.policy.rules();
    return evaluate(rules, { ...q, argument: sanitizeArgument(q.argument) }, systemFacts(this.p.registry));
  }

  /** A person's prompt for `ask` decisions; the newest gets the questions. Returns how to answer and leave. */
  registerPrompt(prompt: Prompt): { answer(id: number, target: string): void; close(): void } {
    const unregister = this.p.asks.register(prompt);
    this.p.log("qrexec: an ask prompt registered");
    return { answer: (id, target) => this.p.asks.answer(prompt, id, target), close: unregister };
  }

  // ---- sessions and events -------------------------------------------------------------------

  /** Runs a program (or, as dom0 calling, a service) in a domain or a new disposable; resolves once it runs. */
  async exec(cmd: ExecCommand): Promise<ExecSession> {
    const requestedTarget = "domain" in cmd.target ? cmd.target.domain : "@dispvm";
    // A service call runs as dom0 calling it (Qubes' `qvm-run --service`); no policy applies to the admin.
    const svc = "service" in cmd.what ? serviceCommand({ ...cmd.what, source: ADMIN_DOMAIN_NAME, requestedTarget }) : undefined;
    const command = svc ? svc.argv : "argv" in cmd.what ? cmd.what.argv : (cmd.what as { shell: string }).shell;
    const launched = await this.p.launcher.launch({
      target: cmd.target,
      noAutostart: cmd.noAutostart,
      user: cmd.user,
      cwd: cmd.cwd || undefined,
      env: svc ? { ...cmd.env, ...svc.env } : cmd.env,
      pty: cmd.pty,
      command,
    });
    const { pid } = await launched.proc.started;
    return new ExecSession(launched, pid);
  }

  /** The serial console of a running domain. */
  async console(domain: string): Promise<ConsoleSession> {
    this.p.dispvms.checkUsable(domain);
    return ConsoleSession.open(this.p.runner.running(domain));
  }

  // ---- windows (docs/gui.md) ------------------------------------------------------------------

  /**
   * A program in a new window of a domain, as its default_user (the domain is started first
   * unless noAutostart), or of a new disposable destroyed with its last window.
   */
  async openWindow(target: WindowTarget, argv: string[], size: { width: number; height: number }, noAutostart: boolean): Promise<WindowView> {
    if ("domain" in target) this.p.dispvms.checkUsable(target.domain);
    return this.p.windows.open(target, argv, size, noAutostart);
  }

  listWindows(domain: string): WindowView[] {
    return this.p.windows.list(domain || undefined);
  }

  resizeWindow(domain: string, windowId: number, width: number, height: number): Promise<void> {
    return this.p.windows.resize(domain, windowId, width, height);
  }

  closeWindow(domain: string, windowId: number): Promise<void> {
    return this.p.windows.close(domain, windowId);
  }

  /** A window's remote-framebuffer stream (opaque bytes both ways); it ends with the window. */
  windowStream(domain: string, windowId: number): Promise<Duplex> {
    return this.p.windows.stream(domain, windowId);
  }

  // ---- the global clipboard (docs/gui.md; in memory only) -------------------------------------

  /** Replaces the global clipboard with a window's selection or a terminal's text from `domain`. */
  clipboardCopy(domain: string, from: CopyFrom): Promise<ClipboardState> {
    return this.p.clipboard.copy(domain, from);
  }

  /** Pastes it into `domain` if the qubes.ClipboardPaste policy allows, then wipes it. */
  clipboardPaste(domain: string, into: PasteInto): Promise<{ data: Buffer; source: string }> {
    return this.p.clipboard.paste(domain, into);
  }

  /** Its source and size, never its content. */
  clipboard(): ClipboardState {
    return this.p.clipboard.state();
  }

  /** Text from the user's desktop (source "dom0"). */
  setClipboard(data: Buffer): ClipboardState {
    return this.p.clipboard.set(data);
  }

  /** The content and its source, to the user's desktop; wipes it. */
  takeClipboard(): { data: Buffer; source: string } {
    return this.p.clipboard.take();
  }

  /** Every event from now on (only `domain`'s when given); returns the unsubscribe function. */
  watchEvents(listener: EventListener, domain = ""): () => void {
    return this.p.events.subscribe((ev) => {
      if (!domain || ev.domain === domain) listener(ev);
    });
  }

  /** What is attached to a running domain ("holder:name"), for diagnosis and leak checks. */
  attachmentsOf(name: string): string[] {
    return this.p.runner.attachmentsOf(name);
  }

  private describe(rec: DomainRecord): DomainView {
    const { registry, runner } = this.p;
    return {
      name: rec.name,
      class: rec.class,
      state: runner.state(rec.name),
      label: String(rec.props.label ?? ""),
      template: rec.class === "AppVM" ? String(registry.resolve(rec, "template")) : "",
      netvm: String(registry.resolve(rec, "netvm")),
      tags: [...rec.tags].sort(),
      createdAt: rec.createdAt,
      lastStopReason: runner.lastStopReason(rec.name),
      vmmPid: runner.vmmPid(rec.name),
      accel: runner.accel(rec.name),
      isPreload: this.p.preloads.isPreload(rec.name),
    };
  }
}

/** The fields of a device the host does not have: its BDF alone. */
function absentDevice(bdf: string): PciDeviceInfo {
  return { bdf, classCode: 0, className: "", vendorId: "", deviceId: "", vendorName: "", deviceName: "", driver: "", iommuGroup: -1 };
}

/** The longest passphrase qvmd takes (the CLI's and the web shell's bound too). */
export const MAX_PASSPHRASE_LENGTH = 1024;

/** A passphrase from a request, bounded ("" passes only where `emptyOk`: unlock then asks for one). */
function checkPassphrase(p: string, emptyOk = false): string {
  if (p.length > MAX_PASSPHRASE_LENGTH) throw new QvmError("INVALID_ARGUMENT", `a passphrase is at most ${MAX_PASSPHRASE_LENGTH} characters`);
  if (!p && !emptyOk) throw new QvmError("INVALID_ARGUMENT", "the passphrase is empty");
  return p;
}
