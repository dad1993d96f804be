// Domain properties: one table says each property's type, how a value from the CLI is parsed and
// checked, and where its value comes from when the domain does not set it (Qubes: the domain,
// then its template, then a global default).
import { QvmError, isLabel, LABEL_NAMES } from "@qvm/protocol";
import { VMM_KINDS } from "@qvm/protocol/contracts";
import type { DomainClass, DomainRecord } from "./domain.js";
import { DEFAULT_MAC, checkMac, domainIp } from "./net-identity.js";

export type PropValue = string | number | boolean;

/** What property checks need to know about other domains. */
export interface DomainLookup {
  get(name: string): DomainRecord | undefined;
  list(): DomainRecord[];
  globals(): Record<string, PropValue>;
}

interface PropertyDef {
  type: "int" | "bool" | "str" | "label" | "domain" | "vmm" | "mac" | "uplink";
  doc: string;
  /** Falls back to the template's value before the global default (Qubes' behaviour for most). */
  fromTemplate: boolean;
  /** Name of the global property that supplies the default, or a constant default. */
  global?: string;
  default?: PropValue;
  min?: number;
  max?: number;
  /** Classes that may set it; all when absent. */
  classes?: DomainClass[];
  /** Extra check with access to other domains. */
  check?: (self: DomainRecord, value: PropValue, lookup: DomainLookup) => void;
  /** Chosen at creation (`qvm create --prop`) and never changed after. */
  createOnly?: boolean;
  /** Read-only: derived from the domain's identity and its netvm, never stored. */
  computed?: (self: DomainRecord, lookup: DomainLookup) => PropValue;
}

const GIB = 1024;
/** The most preloaded disposables one template may ask for (Qubes' settings window allows 50); each is a running VM. */
export const MAX_PRELOAD_DISPVMS = 64;

export const PROPERTIES: Record<string, PropertyDef> = {
  label: { type: "label", doc: `color of the domain's trusted frame: ${LABEL_NAMES.join(", ")}`, fromTemplate: false },
  template: {
    type: "domain",
    doc: "TemplateVM whose root this AppVM boots (for a DispVM: the AppVM it is a disposable of)",
    fromTemplate: false,
    global: "default_template",
    classes: ["AppVM", "DispVM"],
    check: (self, value, lookup) => {
      const t = lookup.get(String(value));
      if (!t) throw new QvmError("NOT_FOUND", `template "${value}" does not exist`);
      if (self.class === "DispVM") {
        if (t.class !== "AppVM" || t.props.template_for_dispvms !== true) {
          throw new QvmError("INVALID_ARGUMENT", `"${value}" is not a template for disposables; set \`qvm prefs ${value} template_for_dispvms true\` on an AppVM`);
        }
      } else if (t.class !== "TemplateVM") throw new QvmError("INVALID_ARGUMENT", `"${value}" is a ${t.class}, not a TemplateVM`);
    },
  },
  template_for_dispvms: {
    type: "bool",
    doc: "this AppVM can be the template of disposables",
    fromTemplate: false,
    default: false,
    classes: ["AppVM"],
    check: (self, value) => {
      if (value === true && self.props.encrypted === true) throw new QvmError("INVALID_ARGUMENT", `${self.name} is encrypted: disposables cannot start from a volume only its passphrase opens`);
    },
  },
  encrypted: {
    type: "bool",
    doc: "the private volume is encrypted under a passphrase asked at each start (chosen at creation only; docs/security.md)",
    fromTemplate: false,
    default: false,
    classes: ["AppVM"],
    createOnly: true,
    check: (self, value) => {
      if (value === true && self.props.template_for_dispvms === true) throw new QvmError("INVALID_ARGUMENT", `${self.name} is a template for disposables, which cannot be encrypted`);
    },
  },
  default_dispvm: {
    type: "domain",
    doc: "template for disposables this domain starts (`qvm run --dispvm`)",
    fromTemplate: false,
    global: "default_dispvm",
    check: (_self, value, lookup) => checkDispvmTemplate(String(value), lookup),
  },
  netvm: {
    type: "domain",
    doc: 'domain that provides network access ("" for none)',
    fromTemplate: false,
    global: "default_netvm",
    check: (self, value, lookup) => checkNetvm(self.name, String(value), lookup),
  },
  memory: { type: "int", doc: "initial memory in MiB", fromTemplate: true, default: 400, min: 128, max: 256 * GIB },
  maxmem: { type: "int", doc: "maximum memory in MiB (0: no balancing)", fromTemplate: true, default: 4000, min: 0, max: 256 * GIB },
  vcpus: { type: "int", doc: "number of virtual CPUs", fromTemplate: true, default: 2, min: 1, max: 64 },
  kernel: { type: "str", doc: 'kernel bundle to boot ("" for the domain\'s own)', fromTemplate: true, global: "default_kernel" },
  kernelopts: { type: "str", doc: "extra kernel command line", fromTemplate: true, default: "" },
  autostart: { type: "bool", doc: "start the domain when qvmd starts", fromTemplate: false, default: false },
  provides_network: {
    type: "bool",
    doc: "the domain can be another domain's netvm",
    fromTemplate: false,
    default: false,
    check: (self, value, lookup) => {
      if (value === true) return;
      const users = lookup.list().filter((d) => d.name !== self.name && resolveProperty(d, "netvm", lookup).value === self.name);
      if (users.length) throw new QvmError("FAILED_PRECONDITION", `The qube is still used by other qubes, change theirs 'netvm' first: ${users.map((u) => u.name).join(", ")}`);
    },
  },
  uplink: {
    type: "uplink",
    doc: 'how a net domain reaches the outside: "" (none), "passt" (user-mode networking on the host) or "tap:NAME" (a tap device)',
    fromTemplate: false,
    default: "",
  },
  mac: { type: "mac", doc: "MAC address of the domain's link to its netvm", fromTemplate: false, default: DEFAULT_MAC },
  qid: { type: "int", doc: "stable id given at creation (read-only)", fromTemplate: false, computed: (self) => self.qid ?? 0 },
  dispid: { type: "int", doc: "a disposable's id (read-only; 0 for other domains)", fromTemplate: false, computed: (self) => self.dispid ?? 0 },
  ip: { type: "str", doc: "IPv4 address on the link to its netvm (read-only: from qid, or dispid)", fromTemplate: false, computed: (self) => domainIp(self) },
  visible_ip: { type: "str", doc: "the address the domain sees as its own (read-only)", fromTemplate: false, computed: (self) => domainIp(self) },
  visible_gateway: {
    type: "str",
    doc: 'the gateway the domain sees: its netvm\'s address ("" without a netvm; read-only)',
    fromTemplate: false,
    computed: (self, lookup) => {
      const netvm = lookup.get(String(resolveProperty(self, "netvm", lookup).value));
      return netvm ? domainIp(netvm) : "";
    },
  },
  default_user: { type: "str", doc: "user that `qvm run` runs programs as", fromTemplate: true, default: "user" },
  qrexec_timeout: { type: "int", doc: "seconds to wait for the agent at start", fromTemplate: true, global: "default_qrexec_timeout", min: 1, max: 3600 },
  shutdown_timeout: { type: "int", doc: "seconds to wait for a clean shutdown", fromTemplate: true, global: "default_shutdown_timeout", min: 1, max: 3600 },
  vmm: { type: "vmm", doc: `hypervisor backend: ${VMM_KINDS.join(" or ")}`, fromTemplate: true, global: "default_vmm" },
};

export const GLOBAL_PROPERTIES: Record<string, { type: PropertyDef["type"]; default: PropValue; doc: string; min?: number; max?: number }> = {
  default_template: { type: "str", default: "", doc: "template of new AppVMs" },
  default_netvm: { type: "str", default: "", doc: "netvm of domains that set none" },
  default_dispvm: { type: "str", default: "", doc: "template for disposables (`qvm run --dispvm`)" },
  // Qubes keeps this as dom0's preload-dispvm-max feature; qvm has no dom0 domain to hold it.
  preload_dispvm_max: {
    type: "int",
    default: 0,
    doc: "disposables of default_dispvm kept booted and paused, ready to hand out, when it has no preload-dispvm-max feature of its own",
    min: 0,
    max: MAX_PRELOAD_DISPVMS,
  },
  default_kernel: { type: "str", default: "current", doc: "kernel bundle domains boot" },
  default_vmm: { type: "vmm", default: "qemu", doc: "hypervisor backend" },
  default_qrexec_timeout: { type: "int", default: 60, doc: "seconds to wait for the agent at start", min: 1, max: 3600 },
  default_shutdown_timeout: { type: "int", default: 60, doc: "seconds to wait for a clean shutdown", min: 1, max: 3600 },
};

function unknownProperty(name: string, table: Record<string, unknown>): QvmError {
  return new QvmError("INVALID_ARGUMENT", `unknown property "${name}"; known: ${Object.keys(table).join(", ")}`);
}

/** Parses a value given as text (CLI, API) into the property's type, with range checks. */
export function parsePropertyValue(name: string, raw: string | PropValue, def: { type: PropertyDef["type"]; min?: number; max?: number }): PropValue {
  const text = String(raw);
  switch (def.type) {
    case "int": {
      if (!/^-?\d+$/.test(text)) throw new QvmError("INVALID_ARGUMENT", `${name} must be an integer, not ${JSON.stringify(text)}`);
      const n = Number(text);
      if ((def.min !== undefined && n < def.min) || (def.max !== undefined && n > def.max)) {
        throw new QvmError("INVALID_ARGUMENT", `${name} must be between ${def.min} and ${def.max}, not ${n}`);
      }
      return n;
    }
    case "bool": {
      const t = text.toLowerCase();
      if (["true", "1", "yes", "on"].includes(t)) return true;
      if (["false", "0", "no", "off"].includes(t)) return false;
      throw new QvmError("INVALID_ARGUMENT", `${name} must be true or false, not ${JSON.stringify(text)}`);
    }
    case "label":
      if (!isLabel(text)) throw new QvmError("INVALID_ARGUMENT", `unknown label "${text}"; labels: ${LABEL_NAMES.join(", ")}`);
      return text;
    case "mac":
      try {
        return checkMac(text);
      } catch (err) {
        throw new QvmError("INVALID_ARGUMENT", `${name}: ${(err as Error).message}`);
      }
    case "uplink":
      if (text !== "" && text !== "passt" && !/^tap:[A-Za-z0-9_.-]{1,15}$/.test(text)) {
        throw new QvmError("INVALID_ARGUMENT", `${name} must be "passt", "tap:NAME" (a tap device name of up to 15 letters, digits, . _ -) or "", not ${JSON.stringify(text)}`);
      }
      return text;
    case "vmm":
      if (!(VMM_KINDS as readonly string[]).includes(text)) throw new QvmError("INVALID_ARGUMENT", `${name} must be one of ${VMM_KINDS.join(", ")}, not ${JSON.stringify(text)}`);
      return text;
    case "domain":
    case "str":
      if (text.length > 1024 || /[\x00-\x1f]/.test(text)) throw new QvmError("INVALID_ARGUMENT", `${name} must be printable text up to 1024 characters`);
      return text;
  }
}

/** Refuses to change a property chosen at creation (createOnly) on an existing domain. */
export function checkChangeable(name: string): void {
  if (PROPERTIES[name]?.createOnly) {
    throw new QvmError("INVALID_ARGUMENT", `${name} is chosen when a domain is created (\`qvm create --prop ${name}=…\`) and cannot change: make a new domain and copy the data over`);
  }
}

/** Validates and returns the value to store for `name` on `self`. */
export function checkPropertySet(self: DomainRecord, name: string, raw: string | PropValue, lookup: DomainLookup): PropValue {
  const def = PROPERTIES[name];
  if (!def) throw unknownProperty(name, PROPERTIES);
  if (def.computed) throw new QvmError("INVALID_ARGUMENT", `${name} is read-only: ${def.doc}`);
  if (def.classes && !def.classes.includes(self.class)) {
    throw new QvmError("INVALID_ARGUMENT", `${name} cannot be set on a ${self.class} (only on ${def.classes.join(", ")})`);
  }
  const value = parsePropertyValue(name, raw, def);
  if (def.check && value !== "") def.check(self, value, lookup);
  return value;
}

export function checkGlobalSet(name: string, raw: string | PropValue): PropValue {
  const def = GLOBAL_PROPERTIES[name];
  if (!def) throw unknownProperty(name, GLOBAL_PROPERTIES);
  return parsePropertyValue(name, raw, def);
}

export interface ResolvedProperty {
  value: PropValue;
  /** Where the value came from. */
  source: "own" | "template" | "global" | "default";
}

/** A property's effective value with Qubes' fallback: own -> template -> global -> default. */
export function resolveProperty(self: DomainRecord, name: string, lookup: DomainLookup): ResolvedProperty {
  const def = PROPERTIES[name];
  if (!def) throw unknownProperty(name, PROPERTIES);
  if (def.computed) return { value: def.computed(self, lookup), source: "default" };
  if (Object.hasOwn(self.props, name)) return { value: self.props[name]!, source: "own" };
  if (def.fromTemplate && self.class === "AppVM") {
    const t = lookup.get(String(self.props.template ?? ""));
    if (t && Object.hasOwn(t.props, name)) return { value: t.props[name]!, source: "template" };
  }
  if (def.fromTemplate && self.class === "DispVM") {
    // A disposable takes its settings from its template (an AppVM), which falls back in turn.
    const t = lookup.get(String(self.props.template ?? ""));
    if (t) return { value: resolveProperty(t, name, lookup).value, source: "template" };
  }
  if (name === "netvm") {
    // Qubes: a disposable uses its template's netvm; templates (updated through the updates
    // proxy) and net domains (wired by hand, as setup-network does) never take default_netvm.
    if (self.class === "DispVM") {
      const t = lookup.get(String(self.props.template ?? ""));
      if (t) return { value: resolveProperty(t, name, lookup).value, source: "template" };
    }
    if (self.class === "TemplateVM" || self.props.provides_network === true) return { value: "", source: "default" };
  }
  if (def.global) {
    const globals = lookup.globals();
    const value = Object.hasOwn(globals, def.global) ? globals[def.global]! : GLOBAL_PROPERTIES[def.global]!.default;
    return { value: name === "netvm" && value === self.name ? "" : value, source: "global" };
  }
  return { value: def.default ?? "", source: "default" };
}

/** Refuses a netvm chain that loops back to `self` or names a domain that provides no network. */
function checkNetvm(self: string, netvm: string, lookup: DomainLookup): void {
  if (netvm === self) throw new QvmError("INVALID_ARGUMENT", `Loops in network are unsupported: ${self} -> ${self}`);
  const seen = new Set([self]);
  let cur = netvm;
  while (cur) {
    if (seen.has(cur)) throw new QvmError("INVALID_ARGUMENT", `Loops in network are unsupported: ${[...seen, cur].join(" -> ")}`);
    seen.add(cur);
    const d = lookup.get(cur);
    if (!d) throw new QvmError("NOT_FOUND", `netvm "${cur}" does not exist`);
    if (cur === netvm && d.props.provides_network !== true) {
      throw new QvmError("INVALID_ARGUMENT", `The ${cur} qube does not provide network; set its provides_network to true first`);
    }
    cur = String(resolveProperty(d, "netvm", lookup).value);
  }
}

/** A template for disposables: an AppVM with template_for_dispvms set. */
export function checkDispvmTemplate(name: string, lookup: DomainLookup): void {
  const t = lookup.get(name);
  if (!t) throw new QvmError("NOT_FOUND", `template for disposables "${name}" does not exist`);
  if (t.class !== "AppVM" || t.props.template_for_dispvms !== true) {
    throw new QvmError("INVALID_ARGUMENT", `"${name}" is not a template for disposables; set \`qvm prefs ${name} template_for_dispvms true\` on an AppVM`);
  }
}
