// Decides one qrexec call against the loaded rules, as Qubes 4.2 does: the first rule whose
// service, argument, source and target all match wins; no match denies. Tokens are matched
// against the *intended* target (what the caller asked for); `target=` redirects the call and
// keeps the matched action. The domains the decision may depend on come in as plain data, so
// this file has no I/O and is tested table by table.
//
// As in Qubes (qrexec/policy/parser.py), the admin domain is matched as "@adminvm" or "dom0"
// alike, but where the call goes, and what an ask offers, it is named "dom0".
import { quoteGuest } from "../quote.js";
import type { PolicyRule, Token } from "./parser.js";

export const ADMIN_VM = "@adminvm";
/** The admin domain's name where a decision names a target (Qubes: an allow to @adminvm runs in "dom0"). */
export const ADMIN_NAME = "dom0";

export interface DomainFacts {
  name: string;
  class: "AppVM" | "TemplateVM" | "StandaloneVM" | "DispVM" | "AdminVM";
  tags: string[];
  /** For a DispVM: the template it was made from. */
  template?: string;
  templateForDispvms: boolean;
  /** The domain's default_dispvm ("" when none). */
  defaultDispvm: string;
}

export interface SystemFacts {
  /** Every domain but the admin domain, by name. */
  domains: ReadonlyMap<string, DomainFacts>;
}

export interface CallQuery {
  service: string;
  argument: string;
  source: string;
  /** What the caller asked for: a name, "@default" (or ""), "@dispvm", "@dispvm:NAME", "@adminvm" (or "dom0"). */
  target: string;
}

interface Common {
  rule?: PolicyRule;
  /** The intended target after normalization ("@default", "@adminvm", …). */
  intended: string;
}
export type Decision =
  | (Common & { action: "deny"; reason: string; notify: boolean })
  /** target: a domain name, "dom0" or "@dispvm:TEMPLATE". */
  | (Common & { action: "allow"; target: string; user?: string; autostart: boolean; notify: boolean })
  | (Common & { action: "ask"; targets: string[]; defaultTarget?: string; user?: string; autostart: boolean; notify: boolean });

const ADMIN_FACTS: DomainFacts = { name: ADMIN_VM, class: "AdminVM", tags: [], templateForDispvms: false, defaultDispvm: "" };

function factsOf(system: SystemFacts, name: string): DomainFacts | undefined {
  return name === ADMIN_VM ? ADMIN_FACTS : system.domains.get(name);
}

/** Normalizes a requested target; a string result is why the request is refused outright. */
export function normalizeTarget(raw: string, system: SystemFacts): { target: string } | { refused: string } {
  if (raw === "" || raw === "@default") return { target: "@default" };
  if (raw === "dom0" || raw === ADMIN_VM) return { target: ADMIN_VM };
  if (raw === "@dispvm") return { target: "@dispvm" };
  if (raw.startsWith("@dispvm:")) {
    const t = system.domains.get(raw.slice("@dispvm:".length));
    if (!t?.templateForDispvms) return { refused: `${raw}: no such template for disposables` };
    return { target: raw };
  }
  if (raw.startsWith("@") || !system.domains.has(raw)) return { refused: `no such target ${quoteGuest(raw)}` };
  return { target: raw };
}

/** The disposable template an intended "@dispvm…" target stands for, if any. */
function dispvmTemplateOf(intended: string, source: DomainFacts): string | undefined {
  if (intended === "@dispvm") return source.defaultDispvm || undefined;
  if (intended.startsWith("@dispvm:")) return intended.slice("@dispvm:".length);
  return undefined;
}

function matchesSource(token: Token, s: DomainFacts, system: SystemFacts): boolean {
  switch (token.kind) {
    case "name":
      return s.name === token.name;
    case "adminvm":
      return s.class === "AdminVM";
    case "anyvm":
      return s.class !== "AdminVM";
    case "tag":
      return s.tags.includes(token.tag);
    case "type":
      return s.class === token.type;
    case "dispvm-of":
      return s.class === "DispVM" && s.template === token.template;
    case "dispvm-tag":
      return s.class === "DispVM" && !!s.template && !!system.domains.get(s.template)?.tags.includes(token.tag);
    case "default":
    case "dispvm":
      return false;
  }
}

function matchesTarget(token: Token, intended: string, source: DomainFacts, system: SystemFacts): boolean {
  const dvm = dispvmTemplateOf(intended, source);
  switch (token.kind) {
    case "name":
      return intended === token.name;
    case "adminvm":
      return intended === ADMIN_VM;
    case "anyvm":
      return intended !== ADMIN_VM;
    case "default":
      return intended === "@default";
    case "dispvm":
      return intended === "@dispvm";
    case "dispvm-of":
      return dvm === token.template;
    case "dispvm-tag":
      return !!dvm && !!system.domains.get(dvm)?.tags.includes(token.tag);
    case "tag":
      return !intended.startsWith("@") && !!system.domains.get(intended)?.tags.includes(token.tag);
    case "type":
      return !intended.startsWith("@dispvm") && intended !== "@default" && factsOf(system, intended)?.class === token.type;
  }
}

function ruleMatches(r: PolicyRule, q: CallQuery, intended: string, source: DomainFacts, system: SystemFacts): boolean {
  if (r.service !== "*" && r.service !== q.service) return false;
  if (r.argument !== null && r.argument !== q.argument) return false;
  return matchesSource(r.source, source, system) && matchesTarget(r.target, intended, source, system);
}

/** Where an allowed call goes: a domain name, "dom0" or "@dispvm:TEMPLATE"; or why it cannot. */
function resolveTarget(chosen: string, source: DomainFacts, system: SystemFacts): { target: string } | { refused: string } {
  const n = normalizeTarget(chosen, system);
  if ("refused" in n) return n;
  if (n.target === ADMIN_VM) return source.class === "AdminVM" ? { refused: "a domain cannot call itself" } : { target: ADMIN_NAME };
  if (n.target === "@default") return { refused: "the policy allows @default without a target=" };
  if (n.target === "@dispvm") {
    if (!source.defaultDispvm) return { refused: `${source.name} has no default_dispvm for @dispvm` };
    return resolveTarget(`@dispvm:${source.defaultDispvm}`, source, system);
  }
  if (n.target === source.name) return { refused: "a domain cannot call itself" };
  return n;
}

function firstMatch(rules: readonly PolicyRule[], q: CallQuery, intended: string, source: DomainFacts, system: SystemFacts): PolicyRule | undefined {
  return rules.find((r) => ruleMatches(r, q, intended, source, system));
}

/** Evaluates one call. Never throws: every failure is a deny with its reason. */
export function evaluate(rules: readonly PolicyRule[], q: CallQuery, system: SystemFacts): Decision {
  const source = sourceFacts(system, q.source);
  const norm = normalizeTarget(q.target, system);
  const intended = "target" in norm ? norm.target : q.target;
  const deny = (reason: string, rule?: PolicyRule): Decision => ({ action: "deny", reason, rule, intended, notify: rule?.params.notify !== "no" });
  if (!source) return deny(`no such source ${quoteGuest(q.source)}`);
  if ("refused" in norm) return deny(norm.refused);
  const rule = firstMatch(rules, q, intended, source, system);
  if (!rule) return deny("no rule matches (a call no rule names is denied)");
  const p = rule.params;
  const common = { rule, intended, user: p.user, autostart: p.autostart !== "no", notify: p.notify === "yes" };
  if (rule.action === "deny") return deny("the policy denies it", rule);
  if (rule.action === "allow") {
    const t = resolveTarget(p.target ?? intended, source, system);
    return "refused" in t ? deny(t.refused, rule) : { ...common, action: "allow", target: t.target };
  }
  // ask: offer every target the policy would allow or ask for, never a denied one, each as its
  // rule sends it: a candidate whose rule has target= is offered as that target, so an answer
  // can never reach a domain the policy redirects away from.
  let targets: string[];
  if (p.target) {
    const t = resolveTarget(p.target, source, system);
    if ("refused" in t) return deny(t.refused, rule);
    targets = [t.target];
  } else {
    const offered = new Set<string>();
    for (const c of askCandidates(system, source)) {
      const r = firstMatch(rules, { ...q, target: c }, c, source, system);
      if (!r || r.action === "deny") continue;
      const t = resolveTarget(r.params.target ?? c, source, system);
      if ("target" in t) offered.add(t.target);
    }
    targets = orderTargets([...offered]);
  }
  if (!targets.length) return deny("ask, but no target is allowed", rule);
  // As Qubes: only the policy's default_target is preselected, never what the caller asked for.
  const wanted = p.default_target ? resolveTarget(p.default_target, source, system) : undefined;
  const preferred = wanted && "target" in wanted ? wanted.target : undefined;
  return { ...common, action: "ask", targets, defaultTarget: preferred && targets.includes(preferred) ? preferred : undefined };
}

/** The source's facts; "dom0" and "@adminvm" are the admin domain. */
function sourceFacts(system: SystemFacts, source: string): DomainFacts | undefined {
  return factsOf(system, source === ADMIN_NAME ? ADMIN_VM : source);
}

/**
 * What an ask prompt may consider: every other domain, the admin domain (offered only where a
 * rule names it: @anyvm does not match it), and a new disposable of each template for them.
 */
function askCandidates(system: SystemFacts, source: DomainFacts): string[] {
  const names = [...system.domains.values()].filter((d) => d.name !== source.name && d.class !== "DispVM").map((d) => d.name);
  const dvms = [...system.domains.values()].filter((d) => d.templateForDispvms).map((d) => `@dispvm:${d.name}`);
  return [...names, ADMIN_VM, ...dvms];
}

/** Offered targets as a prompt lists them: domain names in order, then dom0, then disposables. */
function orderTargets(targets: string[]): string[] {
  const rank = (t: string) => (t.startsWith("@dispvm:") ? 2 : t === ADMIN_NAME ? 1 : 0);
  return targets.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * After a prompt answered `chosen`: the call as if the policy had allowed it there, or a deny
 * when the answer was not one of the offered targets.
 */
export function decideAnswer(asked: Extract<Decision, { action: "ask" }>, chosen: string, q: CallQuery, system: SystemFacts): Decision {
  if (!asked.targets.includes(chosen)) return { action: "deny", reason: `the answer ${quoteGuest(chosen)} was not offered`, rule: asked.rule, intended: asked.intended, notify: true };
  const source = sourceFacts(system, q.source);
  if (!source) return { action: "deny", reason: `no such source ${quoteGuest(q.source)}`, rule: asked.rule, intended: asked.intended, notify: true };
  const t = resolveTarget(chosen, source, system);
  if ("refused" in t) return { action: "deny", reason: t.refused, rule: asked.rule, intended: asked.intended, notify: true };
  return { action: "allow", target: t.target, rule: asked.rule, intended: asked.intended, user: asked.user, autostart: asked.autostart, notify: asked.notify };
}
