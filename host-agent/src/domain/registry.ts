// The defined domains: create, clone, remove, properties, features and tags, over the crash-safe
// store. Every change is validated against the model, persisted before it is reported, and
// published on the event feed. Knows nothing of VMs except "is it running" (asked, not owned).
import { QvmError, isLabel, LABEL_NAMES } from "@qvm/protocol";
import { DOMAIN_CLASSES, type DomainClass, type DomainRecord } from "../model/domain.js";
import { validateDomainName } from "../model/names.js";
import { assignIdentity } from "../model/net-identity.js";
import {
  GLOBAL_PROPERTIES,
  PROPERTIES,
  checkGlobalSet,
  checkDispvmTemplate,
  checkChangeable,
  checkPropertySet,
  parsePropertyValue,
  resolveProperty,
  type PropValue,
} from "../model/properties.js";
import { MAX_FEATURES, MAX_TAGS, validateFeature, validateTag } from "../model/tags-features.js";
import type { DomainStore } from "../store/domain-store.js";
import { DEFAULT_REVISIONS_TO_KEEP } from "../storage/volumes.js";
import type { EventBus } from "../base/events.js";
import { isoNow, systemClock, type Clock } from "../base/clock.js";
import { MAX_FIREWALL_RULES, MAX_PCI_DEVICES, activeRules, formatRuleApi, nextExpiry, parseRuleApi, type FirewallRule } from "@qvm/protocol/contracts";

export interface CreateDomainInput {
  name: string;
  klass?: string;
  template?: string;
  label?: string;
  properties?: Record<string, string>;
}

export interface PropertyView {
  name: string;
  value: string;
  type: string;
  source: "own" | "template" | "global" | "default";
  doc: string;
}

export class DomainRegistry {
  constructor(
    readonly store: DomainStore,
    private readonly events: EventBus,
    private readonly isRunning: (name: string) => boolean,
    private readonly clock: Clock = systemClock,
  ) {}

  /** The record, or NOT_FOUND naming the name (validated first: it may come from anywhere). */
  get(name: string): DomainRecord {
    validateDomainName(name);
    const rec = this.store.get(name);
    if (!rec) throw new QvmError("NOT_FOUND", `no domain named "${name}"; see \`qvm ls\``);
    return rec;
  }

  list(): DomainRecord[] {
    return this.store.list();
  }

  /** Validates a new domain and returns its record; nothing is stored yet (see add). */
  prepareCreate(input: CreateDomainInput): DomainRecord {
    const name = validateDomainName(input.name);
    const klass = (input.klass || "AppVM") as DomainClass;
    if (!DOMAIN_CLASSES.includes(klass)) {
      throw new QvmError("INVALID_ARGUMENT", `unknown class "${input.klass}"; classes: ${DOMAIN_CLASSES.join(", ")}`);
    }
    if (!input.label) throw new QvmError("INVALID_ARGUMENT", `a label is required (--label): ${LABEL_NAMES.join(", ")}`);
    if (!isLabel(input.label)) throw new QvmError("INVALID_ARGUMENT", `unknown label "${input.label}"; labels: ${LABEL_NAMES.join(", ")}`);
    if (this.store.get(name)) throw new QvmError("ALREADY_EXISTS", `domain "${name}" already exists`);

    const record: DomainRecord = { name, class: klass, props: { label: input.label }, features: {}, tags: [], createdAt: isoNow(this.clock) };
    if (klass === "DispVM") {
      const dvm = input.template || String(this.store.globals().default_dispvm ?? "");
      if (!dvm) throw new QvmError("INVALID_ARGUMENT", "a DispVM needs a template for disposables (--template), and no default_dispvm is set");
      record.props.template = checkPropertySet(record, "template", dvm, this.store);
    }
    const templateName = input.template || String(this.store.globals().default_template ?? "");
    if (klass === "AppVM") {
      if (!templateName) throw new QvmError("INVALID_ARGUMENT", "an AppVM needs a template (--template), and no default_template is set");
      record.props.template = checkPropertySet(record, "template", templateName, this.store);
    } else if (klass !== "DispVM" && input.template) {
      // A TemplateVM or StandaloneVM created from a template starts from the same root image.
      const source = this.get(input.template);
      if (source.class !== "TemplateVM") throw new QvmError("INVALID_ARGUMENT", `"${input.template}" is a ${source.class}, not a TemplateVM`);
      record.rootFrom = source.name;
    }
    for (const [prop, raw] of Object.entries(input.properties ?? {})) {
      if (prop === "template") {
        throw new QvmError("INVALID_ARGUMENT", "set the template with --template, not --prop");
      }
      record.props[prop] = checkPropertySet(record, prop, raw, this.store);
    }
    return record;
  }

  /** Stores a prepared record (its volumes exist by now) and announces it. */
  add(record: DomainRecord, fields: Record<string, string> = {}): DomainRecord {
    assignIdentity(record, this.store.list());
    this.store.create(record);
    this.events.publish("domain-add", record.name, { class: record.class, ...fields });
    return record;
  }

  /** Gives domains stored by a qvmd older than network identities their qid (and dispid). */
  assignMissingIdentities(): string[] {
    const done: string[] = [];
    for (const rec of this.store.list()) {
      if (rec.qid && (rec.class !== "DispVM" || rec.dispid)) continue;
      this.store.update(rec.name, (r) => assignIdentity(r, this.store.list()));
      done.push(rec.name);
    }
    return done;
  }

  /**
   * The TemplateVM record for a built template image, if no domain has its name yet. An image
   * whose root hands over to another init (its manifest's `init`: a NixOS root) gets it as
   * kernelopts `qvm.init=PATH`, which the template's AppVMs inherit.
   */
  templateImageRecord(imageName: string, init?: string): DomainRecord | undefined {
    if (this.store.get(imageName)) return undefined;
    return {
      name: validateDomainName(imageName),
      class: "TemplateVM",
      props: { label: "black", ...(init ? { kernelopts: `qvm.init=${init}` } : {}) },
      features: {},
      tags: [],
      createdAt: isoNow(this.clock),
      rootFrom: imageName,
    };
  }

  /** The first template becomes the default for new AppVMs. */
  adoptDefaultTemplate(name: string): void {
    if (!this.store.globals().default_template) this.store.setGlobal("default_template", name);
  }

  prepareClone(source: string, name: string): DomainRecord {
    const src = this.get(source);
    validateDomainName(name);
    if (this.store.get(name)) throw new QvmError("ALREADY_EXISTS", `domain "${name}" already exists`);
    const clone: DomainRecord = { ...structuredClone(src), name, createdAt: isoNow(this.clock) };
    // A clone is a new domain: it gets its own qid (and address) when added, and its VMM its own
    // uid at its first start. A PCI device stays with its one domain, and so do emulated USB
    // devices (a stick's image is plugged into one domain) and USB assignments.
    delete clone.qid;
    delete clone.dispid;
    delete clone.vmmUid;
    delete clone.pci;
    delete clone.usbPlugs;
    delete clone.usb;
    return clone;
  }

  remove(name: string): void {
    this.get(name);
    if (this.isRunning(name)) throw new QvmError("FAILED_PRECONDITION", `${name} is running: stop it first with \`qvm shutdown --wait ${name}\``);
    const users = this.usersOf(name);
    if (users.length) throw new QvmError("FAILED_PRECONDITION", `${name} is in use: ${users.join("; ")}; change those first`);
    this.store.remove(name);
    this.events.publish("domain-delete", name);
  }

  /** Who depends on `name`: domains using it as template or netvm, globals naming it. */
  usersOf(name: string): string[] {
    const users: string[] = [];
    for (const d of this.store.list()) {
      if (d.props.template === name) users.push(`template of ${d.name}`);
      if (d.props.netvm === name) users.push(`netvm of ${d.name}`);
      if (d.props.default_dispvm === name) users.push(`default_dispvm of ${d.name}`);
    }
    for (const [g, v] of Object.entries(this.store.globals())) if (v === name) users.push(`global ${g}`);
    return users;
  }

  // ---- properties ----------------------------------------------------------------------------

  properties(domain: string): PropertyView[] {
    if (!domain) return Object.keys(GLOBAL_PROPERTIES).map((p) => this.globalProperty(p));
    const rec = this.get(domain);
    return Object.keys(PROPERTIES).map((p) => this.property(rec, p));
  }

  getProperty(domain: string, name: string): PropertyView {
    return domain ? this.property(this.get(domain), name) : this.globalProperty(name);
  }

  setProperty(domain: string, name: string, raw: string): PropertyView {
    if (!domain) return this.setGlobal(name, raw);
    const rec = this.get(domain);
    if (name === "template" && this.isRunning(domain)) {
      throw new QvmError("FAILED_PRECONDITION", `cannot change the template of ${domain} while it runs; shut it down first`);
    }
    checkChangeable(name);
    const value = checkPropertySet(rec, name, raw, this.store);
    const old = resolveProperty(rec, name, this.store).value;
    const updated = this.store.update(domain, (r) => {
      r.props[name] = value;
    });
    this.events.publish("property-set", domain, { name, value: String(value), oldvalue: String(old) });
    return this.property(updated, name);
  }

  resetProperty(domain: string, name: string): PropertyView {
    if (!domain) {
      if (!Object.hasOwn(GLOBAL_PROPERTIES, name)) checkGlobalSet(name, "");
      this.store.setGlobal(name, undefined);
      this.events.publish("global-property-set", "", { name, value: String(GLOBAL_PROPERTIES[name]!.default) });
      return this.globalProperty(name);
    }
    const rec = this.get(domain);
    if (!Object.hasOwn(PROPERTIES, name) || PROPERTIES[name]!.computed) checkPropertySet(rec, name, "", this.store); // throws "unknown property" / "read-only"
    if (name === "provides_network") checkPropertySet(rec, name, "false", this.store); // refused while a client uses it
    checkChangeable(name);
    if (name === "label") throw new QvmError("INVALID_ARGUMENT", "label has no default; set another label instead");
    if (name === "template" && rec.class === "AppVM") {
      const fallback = String(this.store.globals().default_template ?? "");
      if (!fallback) throw new QvmError("INVALID_ARGUMENT", "an AppVM needs a template and no default_template is set");
      if (this.isRunning(domain)) throw new QvmError("FAILED_PRECONDITION", `cannot change the template of ${domain} while it runs`);
    }
    const updated = this.store.update(domain, (r) => {
      delete r.props[name];
    });
    const view = this.property(updated, name);
    this.events.publish("property-reset", domain, { name, value: view.value });
    return view;
  }

  private setGlobal(name: string, raw: string): PropertyView {
    const value = checkGlobalSet(name, raw);
    if (name === "default_dispvm" && value !== "") checkDispvmTemplate(String(value), this.store);
    if ((name === "default_template" || name === "default_netvm") && value !== "") {
      const target = this.get(String(value));
      if (name === "default_template" && target.class !== "TemplateVM") throw new QvmError("INVALID_ARGUMENT", `"${value}" is a ${target.class}, not a TemplateVM`);
      if (name === "default_netvm" && target.props.provides_network !== true) {
        throw new QvmError("INVALID_ARGUMENT", `"${value}" does not provide network; set its provides_network to true first`);
      }
    }
    this.store.setGlobal(name, value);
    this.events.publish("global-property-set", "", { name, value: String(value) });
    return this.globalProperty(name);
  }

  private property(rec: DomainRecord, name: string): PropertyView {
    const resolved = resolveProperty(rec, name, this.store);
    const def = PROPERTIES[name]!;
    return { name, value: String(resolved.value), type: def.type, source: resolved.source, doc: def.doc };
  }

  private globalProperty(name: string): PropertyView {
    const def = GLOBAL_PROPERTIES[name];
    if (!def) checkGlobalSet(name, ""); // throws "unknown property" with the known list
    const globals = this.store.globals();
    const own = Object.hasOwn(globals, name);
    const value: PropValue = own ? globals[name]! : def!.default;
    return { name, value: String(value), type: def!.type, source: own ? "own" : "default", doc: def!.doc };
  }

  /** Effective value of a property, typed. */
  resolve(rec: DomainRecord, name: string): PropValue {
    return resolveProperty(rec, name, this.store).value;
  }

  // ---- volume settings -----------------------------------------------------------------------

  revisionsToKeep(rec: DomainRecord, volume: "root" | "private"): number {
    return rec.volumes?.[volume]?.revisionsToKeep ?? DEFAULT_REVISIONS_TO_KEEP;
  }

  configVolume(domain: string, volume: string, property: string, value: string): void {
    this.get(domain);
    if (volume !== "root" && volume !== "private") throw new QvmError("INVALID_ARGUMENT", `no configurable volume "${volume}"; volumes: root, private`);
    if (property !== "revisions_to_keep") throw new QvmError("INVALID_ARGUMENT", `unknown volume setting "${property}"; known: revisions_to_keep`);
    const n = parsePropertyValue(property, value, { type: "int", min: 0, max: 64 }) as number;
    this.store.update(domain, (r) => {
      r.volumes = { ...r.volumes, [volume]: { revisionsToKeep: n } };
    });
    this.events.publish("volume-config", domain, { volume, property, value: String(n) });
  }

  // ---- features and tags ---------------------------------------------------------------------

  features(domain: string): Record<string, string> {
    return { ...this.get(domain).features };
  }

  setFeature(domain: string, name: string, value: string): void {
    const rec = this.get(domain);
    validateFeature(name, value);
    if (!Object.hasOwn(rec.features, name) && Object.keys(rec.features).length >= MAX_FEATURES) {
      throw new QvmError("INVALID_ARGUMENT", `${domain} already has ${MAX_FEATURES} features`);
    }
    this.store.update(domain, (r) => {
      r.features[name] = value;
    });
    this.events.publish("feature-set", domain, { name, value });
  }

  removeFeature(domain: string, name: string): void {
    const rec = this.get(domain);
    validateFeature(name);
    if (!Object.hasOwn(rec.features, name)) throw new QvmError("NOT_FOUND", `${domain} has no feature "${name}"`);
    this.store.update(domain, (r) => {
      delete r.features[name];
    });
    this.events.publish("feature-delete", domain, { name });
  }

  tags(domain: string): string[] {
    return [...this.get(domain).tags].sort();
  }

  addTag(domain: string, tag: string): void {
    const rec = this.get(domain);
    validateTag(tag);
    if (rec.tags.includes(tag)) return;
    if (rec.tags.length >= MAX_TAGS) throw new QvmError("INVALID_ARGUMENT", `${domain} already has ${MAX_TAGS} tags`);
    this.store.update(domain, (r) => {
      r.tags.push(tag);
    });
    this.events.publish("tag-add", domain, { tag });
  }

  removeTag(domain: string, tag: string): void {
    const rec = this.get(domain);
    validateTag(tag);
    if (!rec.tags.includes(tag)) throw new QvmError("NOT_FOUND", `${domain} has no tag "${tag}"`);
    this.store.update(domain, (r) => {
      r.tags = r.tags.filter((t) => t !== tag);
    });
    this.events.publish("tag-delete", domain, { tag });
  }

  // ---- firewall (Qubes' qvm-firewall; enforced by the netvm, which follows firewall-changed) ----

  /** The domain's rules in force now, in order (expired ones left out, as Qubes' Get). */
  firewall(domain: string): FirewallRule[] {
    return activeRules(storedFirewall(this.get(domain)), this.nowSeconds());
  }

  /**
   * Replaces the domain's rules, all or nothing: they are stored (crash-safe, with the record)
   * before firewall-changed is published, and a failure stores nothing and announces nothing.
   */
  setFirewall(domain: string, rules: readonly FirewallRule[]): void {
    this.get(domain);
    if (rules.length > MAX_FIREWALL_RULES) throw new QvmError("RESOURCE_EXHAUSTED", `${rules.length} firewall rules: at most ${MAX_FIREWALL_RULES} per domain`);
    const lines = rules.map((r) => formatRuleApi(r));
    this.store.update(domain, (r) => {
      r.firewall = lines;
    });
    this.events.publish("firewall-changed", domain, { reason: "set" });
  }

  /** Announces the rules again, unchanged (the netvm applies them again, resolving names again). */
  reloadFirewall(domain: string): void {
    this.get(domain);
    this.events.publish("firewall-changed", domain, { reason: "reload" });
  }

  // ---- PCI devices (Qubes' qvm-pci; passed through with VFIO from the domain's next start) ----

  /** The host PCI devices assigned to the domain, by canonical BDF, in the order assigned. */
  pciDevices(domain: string): string[] {
    return (this.get(domain).pci ?? []).map((d) => d.bdf);
  }

  /** The domain a device is assigned to; undefined when none. */
  pciOwner(bdf: string): string | undefined {
    return this.store.list().find((r) => r.pci?.some((d) => d.bdf === bdf))?.name;
  }

  /**
   * Assigns devices, all or none (checked by the caller against the host, under the caller's
   * lock on every assignment): stored with the domain (crash-safe) in one write, then one
   * device-assign per device is published.
   */
  assignPci(domain: string, bdfs: readonly string[]): void {
    const rec = this.get(domain);
    for (const bdf of bdfs) {
      const owner = this.pciOwner(bdf);
      if (owner === domain) throw new QvmError("ALREADY_EXISTS", `${bdf} is already assigned to ${domain}`);
      if (owner) throw new QvmError("FAILED_PRECONDITION", `${bdf} is assigned to ${owner}: a device goes to one domain; detach it there first (\`qvm pci detach ${owner} ${bdf}\`)`);
    }
    if ((rec.pci ?? []).length + bdfs.length > MAX_PCI_DEVICES) throw new QvmError("RESOURCE_EXHAUSTED", `${domain} would have more than ${MAX_PCI_DEVICES} PCI devices`);
    this.store.update(domain, (r) => {
      r.pci = [...(r.pci ?? []), ...bdfs.map((bdf) => ({ bdf }))];
    });
    for (const bdf of bdfs) this.events.publish("device-assign", domain, { devclass: "pci", device: bdf });
  }

  /** Removes assignments, all or none: stored, then one device-unassign per device is published. */
  unassignPci(domain: string, bdfs: readonly string[]): void {
    const rec = this.get(domain);
    const missing = bdfs.find((bdf) => !rec.pci?.some((d) => d.bdf === bdf));
    if (missing) throw new QvmError("NOT_FOUND", `${missing} is not assigned to ${domain}; see \`qvm pci ls ${domain}\``);
    this.store.update(domain, (r) => {
      const left = (r.pci ?? []).filter((d) => !bdfs.includes(d.bdf));
      if (left.length) r.pci = left;
      else delete r.pci;
    });
    for (const bdf of bdfs) this.events.publish("device-unassign", domain, { devclass: "pci", device: bdf });
  }

  /** When (UNIX seconds) the domain's next rule expires; undefined when none will, or no such domain. */
  firewallExpiry(domain: string): number | undefined {
    const rec = this.store.get(domain);
    return rec ? nextExpiry(storedFirewall(rec), this.nowSeconds()) : undefined;
  }

  private nowSeconds(): number {
    return this.clock.now() / 1000;
  }
}

/** Qubes' default for a domain never given rules: accept everything. */
const DEFAULT_FIREWALL: readonly string[] = ["action=accept"];

/** Every stored rule, expired ones included (the store's schema checked that each parses). */
function storedFirewall(rec: DomainRecord): FirewallRule[] {
  return (rec.firewall ?? DEFAULT_FIREWALL).map((line) => parseRuleApi(line));
}
