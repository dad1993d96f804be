// Qubes 4.2's qrexec policy language (Qubes' qrexec documentation), parsed strictly:
//
//   SERVICE|*  +ARG|*  SOURCE  TARGET  allow|deny|ask  [param=value ...]
//   !include PATH   !include-dir PATH   !include-service SERVICE ARG PATH
//
// Comments are whole lines starting with "#". Any error names its file and line; the caller
// then fails every call closed (a policy that is half understood must not allow anything).
import {
  ARGUMENT_PATTERN,
  DOMAIN_CLASSES,
  POLICY_ACTIONS,
  QvmError,
  isDomainNameShaped,
  isValidServiceName,
  type PolicyActionWord,
} from "@qvm/protocol/contracts";

export type Action = PolicyActionWord;

/** A source or target token. */
export type Token =
  | { kind: "name"; name: string }
  | { kind: "anyvm" }
  | { kind: "adminvm" }
  | { kind: "default" }
  | { kind: "dispvm" }
  | { kind: "dispvm-of"; template: string }
  | { kind: "dispvm-tag"; tag: string }
  | { kind: "tag"; tag: string }
  | { kind: "type"; type: string };

export interface PolicyRule {
  kind: "rule";
  file: string;
  line: number;
  service: string; // "*" for any
  argument: string | null; // null for "*", "" for a bare "+"
  source: Token;
  target: Token;
  action: Action;
  params: Record<string, string>;
}

export interface PolicyInclude {
  kind: "include" | "include-dir" | "include-service";
  file: string;
  line: number;
  path: string;
  service?: string;
  argument?: string | null;
}

export type PolicyEntry = PolicyRule | PolicyInclude;

const TAG_RE = /^[a-zA-Z0-9_-]+$/;
/** What `@type:` may name: the domain classes and dom0's own. */
const TYPES: readonly string[] = [...DOMAIN_CLASSES, "AdminVM"];
const PARAMS: Record<Action, string[]> = {
  allow: ["target", "user", "notify", "autostart"],
  ask: ["target", "default_target", "user", "notify", "autostart"],
  deny: ["notify"],
};
const YES_NO = ["yes", "no"];
export const MAX_POLICY_LINE = 4096;

function fail(file: string, line: number, msg: string): never {
  throw new QvmError("POLICY_INVALID", `${file}:${line}: ${msg}`);
}

export function parseToken(text: string, role: "source" | "target"): Token | string {
  if (text === "@anyvm") return { kind: "anyvm" };
  if (text === "@adminvm" || text === "dom0") return { kind: "adminvm" };
  if (text === "@default") return role === "target" ? { kind: "default" } : "@default is only a target";
  if (text === "@dispvm") return role === "target" ? { kind: "dispvm" } : "@dispvm (without a template) is only a target";
  if (text.startsWith("@dispvm:@tag:")) {
    const tag = text.slice("@dispvm:@tag:".length);
    return TAG_RE.test(tag) ? { kind: "dispvm-tag", tag } : `invalid tag in ${JSON.stringify(text)}`;
  }
  if (text.startsWith("@dispvm:")) {
    const template = text.slice("@dispvm:".length);
    return isDomainNameShaped(template) ? { kind: "dispvm-of", template } : `invalid template name in ${JSON.stringify(text)}`;
  }
  if (text.startsWith("@tag:")) {
    const tag = text.slice(5);
    return TAG_RE.test(tag) ? { kind: "tag", tag } : `invalid tag in ${JSON.stringify(text)}`;
  }
  if (text.startsWith("@type:")) {
    const type = text.slice(6);
    return TYPES.includes(type) ? { kind: "type", type } : `unknown type in ${JSON.stringify(text)}; types: ${TYPES.join(", ")}`;
  }
  if (text.startsWith("@")) return `unknown token ${JSON.stringify(text)}`;
  return isDomainNameShaped(text) ? { kind: "name", name: text } : `invalid domain name ${JSON.stringify(text)}`;
}

function parseArgument(text: string, file: string, line: number): string | null {
  if (text === "*") return null;
  if (!text.startsWith("+") || !ARGUMENT_PATTERN.test(text.slice(1))) fail(file, line, `argument must be "*" or "+" followed by an argument, not ${JSON.stringify(text)}`);
  return text.slice(1);
}

/** The meaningful lines of a policy file: [line number, words], comments and blanks skipped. */
function policyLines(text: string, file: string): Array<[number, string[]]> {
  const out: Array<[number, string[]]> = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i]!;
    if (raw.length > MAX_POLICY_LINE) fail(file, n, `line longer than ${MAX_POLICY_LINE} characters`);
    if (/[\x00-\x08\x0b-\x1f\x7f]/.test(raw.replace(/\r$/, ""))) fail(file, n, "control characters are not allowed");
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    out.push([n, line.split(/\s+/)]);
  }
  return out;
}

/**
 * Parses a file named by `!include-service`: Qubes 4.0's per-service syntax, lines of
 * `SOURCE TARGET ACTION[,param=value...]` (`$` may stand for `@`), applying to one service and
 * argument. `@include:PATH` / `$include:PATH` lines include more files of the same syntax.
 */
export function parseLegacyPolicy(text: string, file: string, service: string, argument: string | null): PolicyEntry[] {
  const entries: PolicyEntry[] = [];
  for (const [n, rawWords] of policyLines(text, file)) {
    const words = rawWords.map((w) => w.replace(/^\$/, "@").replace(/:\$/g, ":@"));
    if (words[0]!.startsWith("@include:")) {
      if (words.length !== 1) fail(file, n, "@include:PATH takes nothing after the path");
      entries.push({ kind: "include-service", file, line: n, path: words[0]!.slice("@include:".length), service, argument });
      continue;
    }
    if (words.length < 3) fail(file, n, "a rule needs SOURCE TARGET ACTION");
    const [first, ...commaParams] = words.slice(2).join(",").split(",");
    entries.push(ruleFrom(file, n, service, argument, words[0]!, words[1]!, first!, commaParams.filter(Boolean)));
  }
  return entries;
}

/** Parses one policy file's text. `file` names it in errors. */
export function parsePolicy(text: string, file: string): PolicyEntry[] {
  const entries: PolicyEntry[] = [];
  for (const [n, words] of policyLines(text, file)) {
    const head = words[0]!;
    if (head.startsWith("!")) {
      if (head === "!include" || head === "!include-dir") {
        if (words.length !== 2) fail(file, n, `${head} takes one path`);
        entries.push({ kind: head === "!include" ? "include" : "include-dir", file, line: n, path: words[1]! });
      } else if (head === "!include-service") {
        if (words.length !== 4) fail(file, n, "!include-service takes SERVICE ARGUMENT PATH");
        if (!isValidServiceName(words[1]!)) fail(file, n, `invalid service name ${JSON.stringify(words[1])}`);
        entries.push({ kind: "include-service", file, line: n, service: words[1]!, argument: parseArgument(words[2]!, file, n), path: words[3]! });
      } else fail(file, n, `unknown directive ${JSON.stringify(head)}; directives: !include, !include-dir, !include-service`);
      continue;
    }
    if (words.length < 5) fail(file, n, "a rule needs SERVICE ARGUMENT SOURCE TARGET ACTION");
    const [service, argText, sourceText, targetText, actionText, ...paramWords] = words as [string, string, string, string, string, ...string[]];
    if (service !== "*" && !isValidServiceName(service)) fail(file, n, `invalid service name ${JSON.stringify(service)}`);
    const argument = parseArgument(argText, file, n);
    if (service === "*" && argument !== null) fail(file, n, 'a service of "*" needs an argument of "*"');
    entries.push(ruleFrom(file, n, service, argument, sourceText, targetText, actionText, paramWords));
  }
  return entries;
}

function ruleFrom(
  file: string,
  n: number,
  service: string,
  argument: string | null,
  sourceText: string,
  targetText: string,
  actionText: string,
  paramWords: string[],
): PolicyRule {
  const source = parseToken(sourceText, "source");
  if (typeof source === "string") fail(file, n, `source: ${source}`);
  const target = parseToken(targetText, "target");
  if (typeof target === "string") fail(file, n, `target: ${target}`);
  const action = POLICY_ACTIONS.find((a) => a === actionText);
  if (!action) fail(file, n, `action must be allow, deny or ask, not ${JSON.stringify(actionText)}`);
  const params: Record<string, string> = {};
  for (const p of paramWords) {
    const eq = p.indexOf("=");
    if (eq <= 0) fail(file, n, `parameter must be name=value, not ${JSON.stringify(p)}`);
    const key = p.slice(0, eq);
    const value = p.slice(eq + 1);
    if (!PARAMS[action].includes(key)) fail(file, n, `${action} takes no parameter "${key}"; it takes: ${PARAMS[action].join(", ")}`);
    if (Object.hasOwn(params, key)) fail(file, n, `parameter "${key}" given twice`);
    if ((key === "notify" || key === "autostart") && !YES_NO.includes(value)) fail(file, n, `${key} must be yes or no`);
    if (key === "target" || key === "default_target") {
      const t = parseToken(value, "target");
      if (typeof t === "string" || t.kind === "anyvm" || t.kind === "default" || t.kind === "tag" || t.kind === "type" || t.kind === "dispvm-tag") {
        fail(file, n, `${key} must name one domain, @adminvm, @dispvm or @dispvm:NAME, not ${JSON.stringify(value)}`);
      }
    }
    if (key === "user" && !/^[a-z_][a-z0-9_-]{0,31}$/.test(value)) fail(file, n, `invalid user name ${JSON.stringify(value)}`);
    params[key] = value;
  }
  if (action === "allow" && target.kind === "default" && !params.target) fail(file, n, "an allow rule for @default must set target=");
  return { kind: "rule", file, line: n, service, argument, source, target, action, params };
}
