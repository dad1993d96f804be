// What `qvm apply` would change: the current state (read through the admin API and the policy
// directory) against the declared file, as an ordered list of actions, each one admin call (or
// one policy file written). Pure, so the rules are tested without a qvmd:
//
// - Domains are handled in dependency order (declaredCreationOrder: templates before their
//   users, netvms before their clients), all of one domain's actions together.
// - Only what the file declares is changed. What it declared at the last apply and no longer does
//   is reset (properties) or removed (features, tags): the domain's qvm-apply.declared feature
//   records those names (see ApplyRecord). Properties, features and tags set by other means, and
//   a firewall the file does not declare, are left as they are.
// - Nothing is deleted: a domain not in the file is listed, as "not declared" or, when it carries
//   the marker, as "no longer declared"; a policy file not in the file is listed.
// - A domain's class cannot change (as with `qvm prefs`, which cannot set it): planning fails.
//   Its template is a property and is set, on an AppVM or DispVM; a TemplateVM's or
//   StandaloneVM's template says what its root was copied from at creation, and is not compared.
import { QvmError, formatRuleApi, type DomainClassWord, type QvmErrorCode } from "@qvm/protocol/contracts";
import {
  DECLARED_MARKER_FEATURE,
  MAX_FEATURE_VALUE,
  RESERVED_POLICY_FILES,
  declaredCreationOrder,
  parseDeclaredRule,
  type DeclaredDomain,
  type DeclaredFile,
} from "@qvm/protocol/declared";

/** A domain as the plan sees it; `properties` holds each property's effective value and whether it is the domain's own. */
export interface CurrentDomain {
  name: string;
  class: string;
  properties: Record<string, { value: string; own: boolean }>;
  features: Record<string, string>;
  tags: string[];
  /** Admin API lines, as GetFirewall answers. */
  firewall: string[];
}

export interface CurrentState {
  /** Every domain that is declared or carries the marker, read in full. */
  domains: CurrentDomain[];
  /** Every other domain, by name. */
  others: string[];
  /**
   * The policy directory, read only when the file declares policy: the names of its `*.policy`
   * files, and the text of those the file declares.
   */
  policy?: { names: string[]; texts: Record<string, string> };
}

export type ApplyAction =
  | { kind: "create-domain"; domain: string; class: DomainClassWord; template: string; label: string; properties: Record<string, string> }
  | { kind: "set-property"; domain: string; name: string; value: string; old: string | undefined }
  | { kind: "reset-property"; domain: string; name: string; old: string }
  | { kind: "set-feature"; domain: string; name: string; value: string; old: string | undefined }
  | { kind: "remove-feature"; domain: string; name: string; old: string }
  | { kind: "add-tag"; domain: string; tag: string }
  | { kind: "remove-tag"; domain: string; tag: string }
  | { kind: "set-firewall"; domain: string; rules: string[]; old: string[] }
  | { kind: "write-policy"; file: string; text: string; exists: boolean };

export interface ApplyPlan {
  actions: ApplyAction[];
  /** Domains that exist, are not in the file and were never made by apply: left alone. */
  notDeclared: string[];
  /** Domains apply made or managed that the file no longer declares: left alone. */
  noLongerDeclared: string[];
  /** Policy files in the directory the file does not declare (qvm's own aside): left alone. */
  undeclaredPolicyFiles: string[];
}

/** The rule a domain never given any has (Qubes' default). */
const DEFAULT_FIREWALL = ["action=accept"];

/**
 * What the last apply declared for a domain, kept as the value of its qvm-apply.declared feature:
 * `properties=memory,netvm features=gui tags=work`. Names cannot hold "," "=" or spaces (their
 * patterns forbid them). "1", or any value without such parts, records nothing: a domain marked by
 * hand is adopted without anything being reset.
 */
export interface ApplyRecord {
  properties: string[];
  features: string[];
  tags: string[];
}

const RECORD_KINDS = ["properties", "features", "tags"] as const;

export function parseRecord(value: string | undefined): ApplyRecord {
  const record: ApplyRecord = { properties: [], features: [], tags: [] };
  for (const word of (value ?? "").split(/\s+/)) {
    const m = /^(properties|features|tags)=(.*)$/.exec(word);
    if (m) record[m[1] as (typeof RECORD_KINDS)[number]] = m[2]!.split(",").filter((n) => n !== "");
  }
  return record;
}

export function formatRecord(record: ApplyRecord): string {
  const parts = RECORD_KINDS.filter((k) => record[k].length).map((k) => `${k}=${[...new Set(record[k])].sort().join(",")}`);
  return parts.length ? parts.join(" ") : "1";
}

function unionRecord(a: ApplyRecord, b: ApplyRecord): ApplyRecord {
  return { properties: [...a.properties, ...b.properties], features: [...a.features, ...b.features], tags: [...a.tags, ...b.tags] };
}

/** The properties a declared domain sets, as the text qvmd reads back (String() of its typed value). */
export function declaredProperties(d: DeclaredDomain): Record<string, string> {
  const klass = d.class ?? "AppVM";
  const props: Record<string, string> = {};
  // A TemplateVM's or StandaloneVM's template is where its root came from, not a property.
  if (d.template !== undefined && (klass === "AppVM" || klass === "DispVM")) props.template = d.template;
  for (const [name, value] of Object.entries({ netvm: d.netvm, memory: d.memory, vcpus: d.vcpus, ...d.properties })) {
    if (value !== undefined) props[name] = String(value);
  }
  return props;
}

/** The canonical admin API lines of a domain's declared rules (what GetFirewall answers once they are set). */
export function declaredFirewall(d: DeclaredDomain): string[] | undefined {
  return d.firewall?.map((text) => formatRuleApi(parseDeclaredRule(text)));
}

/**
 * The actions that make the current state what `file` declares. Throws (before anything is done)
 * when the file asks for what cannot be done by setting things: a class change, a template, netvm
 * or default_dispvm that is neither declared nor a domain, a record too long for its feature.
 */
export function planApply(state: CurrentState, file: DeclaredFile): ApplyPlan {
  const declared = file.domains ?? {};
  const current = new Map(state.domains.map((d) => [d.name, d]));
  const exists = (name: string) => current.has(name) || state.others.includes(name) || Object.hasOwn(declared, name);
  const problems: Array<{ code: QvmErrorCode; message: string }> = [];
  const actions: ApplyAction[] = [];

  for (const name of declaredCreationOrder(file)) {
    const d = declared[name]!;
    const klass = d.class ?? "AppVM";
    const props = declaredProperties(d);
    for (const [field, ref] of [["template", d.template], ["netvm", d.netvm], ["default_dispvm", d.properties?.default_dispvm]] as const) {
      if (ref && !exists(ref)) problems.push({ code: "NOT_FOUND", message: `${name}: its ${field} ${ref} is neither declared in the file nor an existing domain` });
    }
    const record: ApplyRecord = {
      properties: Object.keys(props),
      features: Object.keys(d.features ?? {}),
      tags: d.tags ?? [],
    };
    const recordText = formatRecord(record);
    if (recordText.length > MAX_FEATURE_VALUE) {
      problems.push({ code: "INVALID_ARGUMENT", message: `${name}: the names of what it declares do not fit in its ${DECLARED_MARKER_FEATURE} feature (${MAX_FEATURE_VALUE} characters): declare fewer features or tags` });
      continue;
    }
    const c = current.get(name);
    if (!c) {
      actions.push(...createActions(name, klass, d, props, recordText));
      continue;
    }
    if (c.class !== klass) {
      problems.push({ code: "FAILED_PRECONDITION", message: `${name} is ${aClass(c.class)} and the file declares ${aClass(klass)}: a domain's class cannot change (\`qvm remove ${name}\`, then apply again, makes it anew: its data is lost)` });
      continue;
    }
    actions.push(...updateActions(c, d, props, record));
  }

  if (file.policy && state.policy) {
    for (const [fileName, text] of Object.entries(file.policy).sort(([a], [b]) => compare(a, b))) {
      const old = state.policy.texts[fileName];
      if (old !== text) actions.push({ kind: "write-policy", file: fileName, text, exists: old !== undefined });
    }
  }

  if (problems.length) throw new QvmError(problems[0]!.code, problems.map((p) => p.message).join("\n"));

  const undeclared = state.domains.filter((c) => !Object.hasOwn(declared, c.name)).map((c) => c.name);
  return {
    actions,
    notDeclared: [...state.others, ...undeclared.filter((n) => current.get(n)!.features[DECLARED_MARKER_FEATURE] === undefined)].sort(compare),
    noLongerDeclared: undeclared.filter((n) => current.get(n)!.features[DECLARED_MARKER_FEATURE] !== undefined).sort(compare),
    undeclaredPolicyFiles: file.policy && state.policy ? state.policy.names.filter((f) => !Object.hasOwn(file.policy!, f) && !RESERVED_POLICY_FILES.includes(f)).sort(compare) : [],
  };
}

/** A new domain: created with its properties in one call, marked, then its features, tags and firewall. */
function createActions(name: string, klass: DomainClassWord, d: DeclaredDomain, props: Record<string, string>, recordText: string): ApplyAction[] {
  // The template goes in its own field of the request (qvmd refuses it as a property).
  const { template: _template, ...properties } = props;
  const actions: ApplyAction[] = [{ kind: "create-domain", domain: name, class: klass, template: d.template ?? "", label: d.label, properties }];
  actions.push({ kind: "set-feature", domain: name, name: DECLARED_MARKER_FEATURE, value: recordText, old: undefined });
  for (const [f, value] of sortedEntries(d.features ?? {})) actions.push({ kind: "set-feature", domain: name, name: f, value, old: undefined });
  for (const tag of [...(d.tags ?? [])].sort(compare)) actions.push({ kind: "add-tag", domain: name, tag });
  const rules = declaredFirewall(d);
  if (rules && !sameList(rules, DEFAULT_FIREWALL)) actions.push({ kind: "set-firewall", domain: name, rules, old: DEFAULT_FIREWALL });
  return actions;
}

/**
 * An existing domain. The record is widened first (to what was and is declared) and narrowed
 * last, so that after a failure in between it still names everything apply may have set.
 */
function updateActions(c: CurrentDomain, d: DeclaredDomain, props: Record<string, string>, record: ApplyRecord): ApplyAction[] {
  const name = c.name;
  const actions: ApplyAction[] = [];
  const markerNow = c.features[DECLARED_MARKER_FEATURE];
  const before = parseRecord(markerNow);
  const widened = formatRecord(unionRecord(before, record));
  if (markerNow === undefined || widened !== formatRecord(before)) actions.push({ kind: "set-feature", domain: name, name: DECLARED_MARKER_FEATURE, value: widened, old: markerNow });

  const prop = (p: string) => c.properties[p];
  if (prop("label")?.value !== d.label) actions.push({ kind: "set-property", domain: name, name: "label", value: d.label, old: prop("label")?.value });
  for (const [p, value] of sortedEntries(props)) {
    const now = prop(p);
    if (!now?.own || now.value !== value) actions.push({ kind: "set-property", domain: name, name: p, value, old: now?.value });
  }
  for (const p of [...before.properties].sort(compare)) {
    const now = prop(p);
    if (!Object.hasOwn(props, p) && now?.own) actions.push({ kind: "reset-property", domain: name, name: p, old: now.value });
  }

  const features = d.features ?? {};
  for (const [f, value] of sortedEntries(features)) {
    if (c.features[f] !== value) actions.push({ kind: "set-feature", domain: name, name: f, value, old: c.features[f] });
  }
  for (const f of [...before.features].sort(compare)) {
    const old = c.features[f];
    if (!Object.hasOwn(features, f) && old !== undefined) actions.push({ kind: "remove-feature", domain: name, name: f, old });
  }

  const tags = d.tags ?? [];
  for (const tag of [...tags].sort(compare)) if (!c.tags.includes(tag)) actions.push({ kind: "add-tag", domain: name, tag });
  for (const tag of [...before.tags].sort(compare)) if (!tags.includes(tag) && c.tags.includes(tag)) actions.push({ kind: "remove-tag", domain: name, tag });

  const rules = declaredFirewall(d);
  if (rules && !sameList(rules, c.firewall)) actions.push({ kind: "set-firewall", domain: name, rules, old: c.firewall });

  const exact = formatRecord(record);
  if (exact !== widened) actions.push({ kind: "set-feature", domain: name, name: DECLARED_MARKER_FEATURE, value: exact, old: widened });
  return actions;
}

// ---- words ---------------------------------------------------------------------------------

/** One line per action, as `qvm apply` prints it: `+` adds, `~` changes, `-` removes, `*` is apply's bookkeeping. */
export function describeAction(a: ApplyAction): string {
  switch (a.kind) {
    case "create-domain": {
      const props = sortedEntries(a.properties).map(([k, v]) => `${k} ${shown(v)}`);
      const what = [a.class, a.template && `template ${a.template}`, `label ${a.label}`, ...props].filter(Boolean).join(", ");
      return `+ create ${a.domain} (${what})`;
    }
    case "set-property":
      return `~ ${a.domain} ${a.name} ${a.old === undefined ? "(unset)" : shown(a.old)} → ${shown(a.value)}`;
    case "reset-property":
      return `~ ${a.domain} ${a.name} ${shown(a.old)} → default (no longer declared)`;
    case "set-feature":
      if (a.name === DECLARED_MARKER_FEATURE) return `* ${a.domain} ${a.name} ${shown(a.value)} (what apply manages here)`;
      return a.old === undefined ? `+ ${a.domain} feature ${a.name} ${shown(a.value)}` : `~ ${a.domain} feature ${a.name} ${shown(a.old)} → ${shown(a.value)}`;
    case "remove-feature":
      return `- ${a.domain} feature ${a.name} (no longer declared)`;
    case "add-tag":
      return `+ ${a.domain} tag ${a.tag}`;
    case "remove-tag":
      return `- ${a.domain} tag ${a.tag} (no longer declared)`;
    case "set-firewall":
      return `~ ${a.domain} firewall (${count(a.old.length, "rule")} → ${count(a.rules.length, "rule")}): ${a.rules.length ? a.rules.join("; ") : "none: everything is dropped"}`;
    case "write-policy": {
      const lines = a.text === "" ? 0 : a.text.split("\n").length - (a.text.endsWith("\n") ? 1 : 0);
      return `${a.exists ? "~" : "+"} policy ${a.file} (${a.exists ? "changed" : "new"}, ${count(lines, "line")})`;
    }
  }
}

/** The lines for what the plan leaves alone. */
export function describeLeftAlone(plan: ApplyPlan): string[] {
  return [
    ...plan.notDeclared.map((n) => `= ${n}: not declared (left alone)`),
    ...plan.noLongerDeclared.map((n) => `= ${n}: no longer declared (left alone; remove it with \`qvm remove ${n}\`)`),
    ...plan.undeclaredPolicyFiles.map((f) => `= policy ${f}: not declared (left alone)`),
  ];
}

function shown(v: string): string {
  return v === "" || /[\s"]/.test(v) ? JSON.stringify(v) : v;
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

function aClass(klass: string): string {
  return `${/^[AEIOU]/.test(klass) ? "an" : "a"} ${klass}`;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedEntries<T>(o: Record<string, T>): Array<[string, T]> {
  return Object.entries(o).sort(([a], [b]) => compare(a, b));
}
