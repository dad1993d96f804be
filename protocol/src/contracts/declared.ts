// The declared-domains file of `qvm apply FILE` (issue 18): plain data saying which domains exist,
// with which class, label, properties, features, tags and firewall, and what some qrexec policy
// files hold. YAML or JSON people write, and the file a NixOS module writes from
// `services.qvmd.domains.<name>`: so one zod schema, with no transforms or defaults, that
// `z.toJSONSchema` turns into the JSON Schema such a module checks against. The meaning of each
// field, and what `qvm apply` never deletes, is in docs/cli.md ("qvm apply").
//
// The rules are the ones every other input goes through: domain names (names.ts), classes
// (words.ts), labels (labels.ts), firewall rules in `qvm firewall`'s syntax (firewall.ts). The
// property table below mirrors qvmd's (host-agent/src/model/properties.ts), which the CLI may not
// import; host-agent/src/model/declared-contract.test.ts fails when the two part.
//
// Imported as "@qvm/protocol/declared" (contracts/index.ts re-exports only its types): the CLI
// loads this, and zod with it, only when `qvm apply` runs.
import * as z from "zod";
import { LABEL_NAMES, type Label } from "../labels.js";
import { QvmError } from "./errors.js";
import { MAX_FIREWALL_RULES, parseRuleCli, type FirewallRule } from "./firewall.js";
import { DOMAIN_NAME_PATTERN, validateDomainName } from "./names.js";
import { DOMAIN_CLASSES, VMM_KINDS, type DomainClassWord } from "./words.js";

/** The format's version: a file says `version: 1`. */
export const DECLARED_FILE_VERSION = 1;

/**
 * The feature `qvm apply` keeps on each domain it made or manages: it marks the domain as declared
 * (so a domain that leaves the file is reported, never deleted) and records which properties,
 * features and tags the file set (so one that leaves the file is reset or removed, and nothing
 * set by other means is touched). A feature rather than a tag: tags select domains in the qrexec
 * policy (`@tag:`) and `qvm ls --tags`, and bookkeeping must not change who may call whom.
 */
export const DECLARED_MARKER_FEATURE = "qvm-apply.declared";
/** Feature names under this prefix belong to `qvm apply`; a file may not declare them. */
export const APPLY_FEATURE_PREFIX = "qvm-apply.";

/** Policy file names a file may declare: a digit first (the order they are read in), `.policy` last. */
export const POLICY_FILE_NAME_PATTERN = /^[0-9][0-9a-z._-]*\.policy$/;
/** qvm's own policy file, written again at every qvmd start (host-agent qrexec/policy/default-policy.ts). */
export const RESERVED_POLICY_FILES: readonly string[] = ["90-default.policy"];
/** qvmd reads no policy file larger than this (host-agent qrexec/policy/loader.ts). */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024;

// Tags and features, as qvmd checks them (host-agent/src/model/tags-features.ts).
export const TAG_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;
export const FEATURE_NAME_PATTERN = /^[a-zA-Z0-9_.:-]{1,64}$/;
export const MAX_FEATURE_VALUE = 4096;
export const MAX_TAGS = 256;
export const MAX_FEATURES = 256;

/** How a declared property's value is written in the file. */
export type DeclaredPropertyType = "int" | "bool" | "text" | "domain" | "vmm" | "mac" | "uplink";

export interface DeclaredPropertyDef {
  type: DeclaredPropertyType;
  min?: number;
  max?: number;
  /** Classes that may set it; all when absent. */
  classes?: readonly DomainClassWord[];
}

const GIB = 1024;
/**
 * Every property a file may set, with its type and bounds: qvmd's settable properties less label
 * and template, which are fields of their own. netvm, memory and vcpus are fields of the domain
 * too; the others go under `properties`.
 */
export const DECLARED_PROPERTIES = {
  netvm: { type: "domain" },
  memory: { type: "int", min: 128, max: 256 * GIB },
  vcpus: { type: "int", min: 1, max: 64 },
  maxmem: { type: "int", min: 0, max: 256 * GIB },
  template_for_dispvms: { type: "bool", classes: ["AppVM"] },
  default_dispvm: { type: "domain" },
  kernel: { type: "text" },
  kernelopts: { type: "text" },
  autostart: { type: "bool" },
  provides_network: { type: "bool" },
  uplink: { type: "uplink" },
  mac: { type: "mac" },
  default_user: { type: "text" },
  qrexec_timeout: { type: "int", min: 1, max: 3600 },
  shutdown_timeout: { type: "int", min: 1, max: 3600 },
  vmm: { type: "vmm" },
} as const satisfies Record<string, DeclaredPropertyDef>;
export type DeclaredPropertyName = keyof typeof DECLARED_PROPERTIES;

/** The properties that are fields of the domain itself rather than entries of `properties`. */
const DOMAIN_FIELD_PROPERTIES = ["netvm", "memory", "vcpus"] as const;

const MAX_TEXT = 1024;
const CONTROL_CHARS = /[\x00-\x1f\x7f]/;
// Lowercase only: qvmd stores a MAC in lowercase, and a file must read back as what it wrote.
const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UPLINK_PATTERN = /^(passt|tap:[A-Za-z0-9_.-]{1,15})?$/;

const NAME_RULE = 'a letter first, then letters, digits, "_", "." or "-", at most 31 characters';

/** A domain name as qvmd takes one: the pattern (which the JSON Schema carries) and the reserved names. */
function domainNameSchema(shapeMessage: string) {
  return z
    .string({ error: "must be a domain name (text)" })
    .regex(DOMAIN_NAME_PATTERN, shapeMessage)
    .superRefine((name, ctx) => {
      // The pattern has said what is wrong with a name of the wrong shape; this adds the reserved names.
      if (!DOMAIN_NAME_PATTERN.test(name)) return;
      try {
        validateDomainName(name);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: err instanceof QvmError ? err.message : String(err) });
      }
    });
}
const domainName = domainNameSchema(`must be a domain name: ${NAME_RULE}`);
/** A property naming a domain: "" is none (a netvm of "" takes the domain offline). */
const domainRef = z.union([z.literal(""), domainNameSchema(`must be a domain name (${NAME_RULE}), or "" for none`)], { error: `must be a domain name, or "" for none` });

function propertyValue(name: string, def: DeclaredPropertyDef): z.ZodType {
  switch (def.type) {
    case "int": {
      const range = `must be between ${def.min} and ${def.max}`;
      return z
        .number({ error: `must be a number (${name}, in ${name === "memory" || name === "maxmem" ? "MiB" : "whole units"})` })
        .int(`must be a whole number`)
        .min(def.min ?? Number.MIN_SAFE_INTEGER, range)
        .max(def.max ?? Number.MAX_SAFE_INTEGER, range);
    }
    case "bool":
      return z.boolean({ error: "must be true or false" });
    case "text":
      return z
        .string({ error: "must be text" })
        .max(MAX_TEXT, `must be at most ${MAX_TEXT} characters`)
        .refine((s) => !CONTROL_CHARS.test(s), "must not contain control characters");
    case "domain":
      return domainRef;
    case "vmm":
      return z.enum(VMM_KINDS, { error: `must be one of ${VMM_KINDS.join(", ")}` });
    case "mac":
      return z
        .string({ error: "must be a MAC address (text)" })
        .regex(MAC_PATTERN, "must be a MAC address in lowercase, like 00:16:3e:5e:6c:00")
        .refine((s) => (parseInt(s.slice(0, 2), 16) & 1) === 0, "must be a unicast address (the first byte even)");
    case "uplink":
      return z.string({ error: "must be text" }).regex(UPLINK_PATTERN, 'must be "passt", "tap:NAME" (a tap device of up to 15 letters, digits, "." "_" "-") or ""');
  }
}

/** The zod type of each kind of property value (what the inferred file type says of it). */
type ValueSchemaOf<T extends DeclaredPropertyType> = T extends "int" ? z.ZodNumber : T extends "bool" ? z.ZodBoolean : T extends "vmm" ? z.ZodType<(typeof VMM_KINDS)[number]> : z.ZodType<string>;
type PropertyShape<K extends DeclaredPropertyName> = { [N in K]: z.ZodOptional<ValueSchemaOf<(typeof DECLARED_PROPERTIES)[N]["type"]>> };

function propertyShape<K extends DeclaredPropertyName>(names: readonly K[]): PropertyShape<K> {
  return Object.fromEntries(names.map((n) => [n, propertyValue(n, DECLARED_PROPERTIES[n]).optional()])) as PropertyShape<K>;
}

const fieldProperties = propertyShape(DOMAIN_FIELD_PROPERTIES);
type OtherPropertyName = Exclude<DeclaredPropertyName, (typeof DOMAIN_FIELD_PROPERTIES)[number]>;
const otherProperties = propertyShape((Object.keys(DECLARED_PROPERTIES) as DeclaredPropertyName[]).filter((n): n is OtherPropertyName => !(DOMAIN_FIELD_PROPERTIES as readonly string[]).includes(n)));

const featureName = z
  .string()
  .regex(FEATURE_NAME_PATTERN, 'a feature name is 1-64 letters, digits, "_", ".", ":" or "-"')
  .refine((n) => !n.startsWith(APPLY_FEATURE_PREFIX), `features named ${APPLY_FEATURE_PREFIX}* are qvm apply's own bookkeeping`);
const featureValue = z
  .string({ error: 'must be text (quote it: "1")' })
  .max(MAX_FEATURE_VALUE, `must be at most ${MAX_FEATURE_VALUE} characters`)
  .refine((s) => !s.includes("\0"), "must not contain NUL characters");
const tag = z.string({ error: "must be a tag (text)" }).regex(TAG_PATTERN, 'a tag is 1-64 letters, digits, "_" or "-"');

/** A firewall rule written as for `qvm firewall VM add`, e.g. "accept example.com tcp 443". */
const firewallRule = z.string({ error: 'must be a rule as `qvm firewall` takes it, e.g. "accept example.com tcp 443"' }).superRefine((text, ctx) => {
  try {
    parseDeclaredRule(text);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: err instanceof QvmError ? err.message : String(err) });
  }
});

const policyFileName = z
  .string()
  .regex(POLICY_FILE_NAME_PATTERN, "a policy file name is a digit, then 0-9 a-z . _ -, ending in .policy (e.g. 30-user.policy)")
  .refine((n) => !RESERVED_POLICY_FILES.includes(n), "is qvm's own policy file, written again at every qvmd start: put your rules in another file, e.g. 30-user.policy");
const policyText = z
  .string({ error: "must be the file's text" })
  .refine((s) => !s.includes("\0"), "must not contain NUL characters")
  .refine((s) => new TextEncoder().encode(s).length <= MAX_POLICY_FILE_BYTES, `must be at most ${MAX_POLICY_FILE_BYTES} bytes (qvmd reads no larger policy file)`);

export const declaredDomainSchema = z
  .strictObject({
    /** AppVM when absent, as `qvm create`. */
    class: z.enum(DOMAIN_CLASSES, { error: `must be one of ${DOMAIN_CLASSES.join(", ")}` }).optional(),
    label: z.enum(LABEL_NAMES as [Label, ...Label[]], { error: `must be one of ${LABEL_NAMES.join(", ")}` }),
    /**
     * AppVM: the TemplateVM it runs from (default: the global default_template); DispVM: the AppVM
     * it is a disposable of; TemplateVM, StandaloneVM: the TemplateVM whose root it starts as a copy of,
     * at creation only.
     */
    template: domainName.optional(),
    ...fieldProperties,
    properties: z.strictObject(otherProperties).optional(),
    features: z.record(featureName, featureValue).optional(),
    tags: z.array(tag).max(MAX_TAGS, `at most ${MAX_TAGS} tags`).optional(),
    /** The whole rule list, in order; the first rule that matches decides, then drop. */
    firewall: z.array(firewallRule).max(MAX_FIREWALL_RULES, `at most ${MAX_FIREWALL_RULES} rules`).optional(),
  })
  .superRefine((d, ctx) => {
    const klass = d.class ?? "AppVM";
    for (const [name, value] of Object.entries(d.properties ?? {})) {
      const def: DeclaredPropertyDef = DECLARED_PROPERTIES[name as DeclaredPropertyName];
      if (value !== undefined && def.classes && !def.classes.includes(klass)) {
        ctx.addIssue({ code: "custom", path: ["properties", name], message: `cannot be set on ${aClass(klass)} (only on ${def.classes.join(", ")})` });
      }
    }
    const tags = d.tags ?? [];
    for (const [i, t] of tags.entries()) if (tags.indexOf(t) !== i) ctx.addIssue({ code: "custom", path: ["tags", i], message: `${t} is listed twice` });
    if (Object.keys(d.features ?? {}).length > MAX_FEATURES) ctx.addIssue({ code: "custom", path: ["features"], message: `at most ${MAX_FEATURES} features` });
  });

export const declaredFileSchema = z
  .strictObject({
    version: z.literal(DECLARED_FILE_VERSION, { error: `must be ${DECLARED_FILE_VERSION} (the only version of this format)` }),
    domains: z.record(domainName, declaredDomainSchema).optional(),
    /** Policy file name (in DATA/policy.d) → its whole text. */
    policy: z.record(policyFileName, policyText).optional(),
  })
  .superRefine((file, ctx) => {
    const domains = file.domains ?? {};
    for (const [name, d] of Object.entries(domains)) {
      const klass = d.class ?? "AppVM";
      const t = d.template === undefined ? undefined : domains[d.template];
      if (t && d.template !== undefined) {
        const tClass = t.class ?? "AppVM";
        if (klass === "DispVM" && (tClass !== "AppVM" || t.properties?.template_for_dispvms !== true)) {
          ctx.addIssue({ code: "custom", path: ["domains", name, "template"], message: `${d.template} is declared ${aClass(tClass)}${tClass === "AppVM" ? " without template_for_dispvms: true" : ""}: a DispVM's template is an AppVM with template_for_dispvms: true` });
        } else if (klass !== "DispVM" && tClass !== "TemplateVM") {
          ctx.addIssue({ code: "custom", path: ["domains", name, "template"], message: `${d.template} is declared ${aClass(tClass)}, not a TemplateVM` });
        }
      }
    }
    const loop = dependencyLoop(file);
    if (loop) ctx.addIssue({ code: "custom", path: ["domains", loop.at, ...loop.path], message: `domains depend on each other in a loop: ${loop.names.join(" → ")}` });
  });

/** "an AppVM", "a TemplateVM". */
function aClass(klass: string): string {
  return `${klass.startsWith("A") ? "an" : "a"} ${klass}`;
}

export type DeclaredFile = z.infer<typeof declaredFileSchema>;
export type DeclaredDomain = z.infer<typeof declaredDomainSchema>;

/**
 * A declared rule, parsed: `qvm firewall`'s words, where everything after "comment=" is the comment
 * (spaces included, as in an admin API line). Refuses `expire`: a rule that ends would be added
 * again at every apply.
 */
export function parseDeclaredRule(text: string): FirewallRule {
  const at = text.indexOf("comment=");
  const words = (at < 0 ? text : text.slice(0, at)).split(/\s+/).filter((w) => w !== "");
  if (at >= 0) words.push(text.slice(at).replace(/\s+$/, ""));
  if (words.length === 0) throw new QvmError("INVALID_ARGUMENT", 'an empty rule: write it as for `qvm firewall VM add`, e.g. "accept example.com tcp 443"');
  const rule = parseRuleCli(words, 0);
  if (rule.expire !== undefined) throw new QvmError("INVALID_ARGUMENT", "a declared rule cannot expire: the file says what is always there (use `qvm firewall VM add ... expire=+N` for a rule that ends)");
  return rule;
}

/** One declared domain another needs before it, and the field that names it. */
export interface DeclaredDependency {
  name: string;
  path: ["template"] | ["netvm"] | ["properties", "default_dispvm"];
}

/** The declared domains `d` needs before it: its template, netvm and default_dispvm, where the file declares them. */
export function declaredDependencies(file: DeclaredFile, d: DeclaredDomain): DeclaredDependency[] {
  const domains = file.domains ?? {};
  const deps: DeclaredDependency[] = [];
  if (d.template && Object.hasOwn(domains, d.template)) deps.push({ name: d.template, path: ["template"] });
  if (d.netvm && Object.hasOwn(domains, d.netvm)) deps.push({ name: d.netvm, path: ["netvm"] });
  const dvm = d.properties?.default_dispvm;
  if (dvm && Object.hasOwn(domains, dvm)) deps.push({ name: dvm, path: ["properties", "default_dispvm"] });
  return deps;
}

/**
 * The declared domains in an order where each comes after the declared domains it needs
 * (templates before their users, netvms before their clients), otherwise by name. Throws
 * INVALID_ARGUMENT on a loop.
 */
export function declaredCreationOrder(file: DeclaredFile): string[] {
  const loop = dependencyLoop(file);
  if (loop) throw new QvmError("INVALID_ARGUMENT", `domains depend on each other in a loop: ${loop.names.join(" → ")}`);
  const domains = file.domains ?? {};
  const order: string[] = [];
  const done = new Set<string>();
  const visit = (name: string) => {
    if (done.has(name)) return;
    done.add(name);
    for (const dep of declaredDependencies(file, domains[name]!)) visit(dep.name);
    order.push(name);
  };
  for (const name of Object.keys(domains).sort()) visit(name);
  return order;
}

/** A loop among the declared domains: its names (the first again last), and the domain and field that close it. */
interface DependencyLoop {
  names: string[];
  at: string;
  path: DeclaredDependency["path"];
}

function dependencyLoop(file: DeclaredFile): DependencyLoop | undefined {
  const domains = file.domains ?? {};
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (name: string): DependencyLoop | undefined => {
    if (state.get(name) === "done") return undefined;
    state.set(name, "visiting");
    stack.push(name);
    for (const dep of declaredDependencies(file, domains[name]!)) {
      if (state.get(dep.name) === "visiting") return { names: [...stack.slice(stack.indexOf(dep.name)), dep.name], at: name, path: dep.path };
      const found = visit(dep.name);
      if (found) return found;
    }
    stack.pop();
    state.set(name, "done");
    return undefined;
  };
  for (const name of Object.keys(domains).sort()) {
    const found = visit(name);
    if (found) return found;
  }
  return undefined;
}
