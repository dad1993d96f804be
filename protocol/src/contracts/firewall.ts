// A domain's firewall, as Qubes models it (qubes-core-admin qubes/firewall.py, qvm-firewall): an
// ordered list of rules, first match wins, and drop after the last rule. This file is the rule
// model and its text forms: the admin API line (`action=accept dst4=1.2.3.4/32 proto=tcp ...`),
// the qvm-firewall command line (`accept 1.2.3.4 tcp 443`) and the `list` table. The same
// parser runs in qvmd (admin.vm.firewall.Set) and in the netvm that enforces the rules, so a
// line one side accepts the other accepts too. Dependency-free: the CLI and the guest agent
// import it without loading gRPC.
//
// Validation follows Qubes element by element; where Qubes is loose by accident we are strict and
// say so (every value must match a fixed character set, so no value can carry a space, quote or
// newline into an nft script or a QubesDB-like key).
import { QvmError } from "./errors.js";

/** At most this many rules per domain: each becomes nft rules in the netvm (a DoS bound). */
export const MAX_FIREWALL_RULES = 1000;
/** At most this many bytes per rule line (a DoS bound; a real rule is under 200). */
export const MAX_FIREWALL_LINE_BYTES = 1024;
/** The `qvm firewall list` columns, as qvm-firewall prints them. */
export const FIREWALL_LIST_HEADER = ["NO", "ACTION", "HOST", "PROTOCOL", "PORT(S)", "SPECIAL TARGET", "ICMP TYPE", "EXPIRE", "COMMENT"] as const;

export type FirewallAction = "accept" | "drop";
export type FirewallProto = "tcp" | "udp" | "icmp";

export interface FirewallRule {
  action: FirewallAction;
  /** Normalized: "1.2.3.4/32", "10.0.0.0/8", "2001:db8::/64" or a lowercase host name. */
  dsthost?: string;
  proto?: FirewallProto;
  /** Inclusive range; a single port is [p, p]. Only with proto tcp or udp. */
  dstports?: [number, number];
  /** Only with proto icmp. */
  icmptype?: number;
  specialtarget?: "dns";
  /** UNIX time in seconds after which the rule no longer applies. */
  expire?: number;
  comment?: string;
}

// Qubes' RuleOption safe set, and the comment's (the same plus space).
const VALUE_CHARS = /^[A-Za-z0-9:;,./\-_[\]]+$/;
const COMMENT_CHARS = /^[A-Za-z0-9:;,./\-_[\] ]+$/;
const HOSTNAME_CHARS = /^[a-z0-9._-]+$/;
const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
// glibc's inet_pton (which Qubes calls): four decimal numbers 0-255, no leading zeros.
const IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

const ELEMENTS = ["action", "dsthost", "proto", "dstports", "icmptype", "specialtarget", "expire", "comment"] as const;
type Element = (typeof ELEMENTS)[number];
/** Admin API spellings of dsthost. Qubes writes dst4/dst6 for addresses, dsthost for names. */
const API_ALIASES: Readonly<Record<string, Element>> = { dst4: "dsthost", dst6: "dsthost", dstname: "dsthost" };
/** qvm-firewall knows only dst4 and dst6 as synonyms. */
const CLI_ALIASES: Readonly<Record<string, Element>> = { dst4: "dsthost", dst6: "dsthost" };

/** One element as given: the spelling used (named in errors) and the raw value. */
interface Given {
  key: string;
  value: string;
}

function invalid(message: string): QvmError {
  return new QvmError("INVALID_ARGUMENT", message);
}

/** A value quoted for an error message: escaped, and cut so a huge value cannot flood a log. */
function shown(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}

export function isIPv4Address(s: string): boolean {
  return IPV4.test(s);
}

/** IPv6 text as glibc's inet_pton takes it: 8 groups, one "::", an optional dotted IPv4 tail. */
export function isIPv6Address(s: string): boolean {
  let text = s;
  const lastColon = text.lastIndexOf(":");
  if (lastColon < 0) return false;
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    if (!isIPv4Address(tail)) return false;
    text = `${text.slice(0, lastColon + 1)}0:0`; // the IPv4 tail is two groups
  }
  const gap = text.indexOf("::");
  if (gap < 0) {
    const groups = text.split(":");
    return groups.length === 8 && groups.every((g) => HEX_GROUP.test(g));
  }
  if (text.indexOf("::", gap + 1) >= 0) return false;
  const left = text.slice(0, gap);
  const right = text.slice(gap + 2);
  const groups = [...(left ? left.split(":") : []), ...(right ? right.split(":") : [])];
  // "::" stands for at least one zero group (glibc refuses it standing for none).
  return groups.length <= 7 && groups.every((g) => HEX_GROUP.test(g));
}

function parsePrefix(key: string, value: string, text: string, max: number): number {
  if (!/^[0-9]{1,3}$/.test(text) || Number(text) > max) {
    throw invalid(`${key} ${shown(value)}: the prefix length after "/" is 0-${max}`);
  }
  return Number(text);
}

/**
 * A destination as Qubes' DstHost takes it, normalized: a bare address gets /32 or /128; host
 * bits are not checked (Qubes accepts 127.0.0.1/8 too). One deliberate difference: a value made
 * of digits and dots only that is not an IPv4 address ("1.2.3", "300.1.1.1", "010.0.0.1") is
 * refused, where Qubes would take it as a host name and let the resolver read it as inet_aton
 * shorthand (1.2.3 → 1.2.0.3) or octal: never what the user meant.
 */
function parseDsthost(key: string, value: string): string {
  const slash = value.indexOf("/");
  if (slash >= 0) {
    if (value.indexOf("/", slash + 1) >= 0) throw invalid(`${key} ${shown(value)}: at most one "/" (address/prefix length)`);
    const host = value.slice(0, slash);
    const prefixText = value.slice(slash + 1);
    if (isIPv4Address(host)) return `${host}/${parsePrefix(key, value, prefixText, 32)}`;
    if (isIPv6Address(host)) return `${host.toLowerCase()}/${parsePrefix(key, value, prefixText, 128)}`;
    throw invalid(`${key} ${shown(value)}: before "/" must be an IPv4 address (four numbers 0-255 separated by dots) or an IPv6 address`);
  }
  if (value.includes(":")) {
    if (isIPv6Address(value)) return `${value.toLowerCase()}/128`;
    throw invalid(`${key} ${shown(value)}: not a valid IPv6 address`);
  }
  if (/^[0-9.]+$/.test(value)) {
    if (isIPv4Address(value)) return `${value}/32`;
    throw invalid(`${key} ${shown(value)}: an IPv4 address is four numbers 0-255 separated by dots, optionally /0-32`);
  }
  if (!HOSTNAME_CHARS.test(value)) {
    throw invalid(`${key} ${shown(value)}: a host name may contain only lowercase letters, digits, ".", "-" and "_"`);
  }
  return value;
}

function parsePorts(key: string, value: string): [number, number] {
  const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(value);
  if (!m) throw invalid(`${key} ${shown(value)}: a port (N) or a port range (N-M)`);
  // More than 5 digits is out of range whatever they say; Number() of a huge string is not.
  const port = (digits: string) => (digits.length > 5 ? Infinity : Number(digits));
  const low = port(m[1] ?? "");
  const high = m[2] === undefined ? low : port(m[2]);
  if (low > 65535 || high > 65535) throw invalid(`${key} ${shown(value)}: a port is 0-65535`);
  if (low > high) throw invalid(`${key} ${shown(value)}: the first port of a range must not be above the last`);
  return [low, high];
}

/** Checks each element, then the ones that depend on proto, and builds the rule. */
function buildRule(given: ReadonlyMap<Element, Given>): FirewallRule {
  for (const [element, { key, value }] of given) {
    if (value === "") throw invalid(`${key}: empty value`);
    const chars = element === "comment" ? COMMENT_CHARS : VALUE_CHARS;
    if (!chars.test(value)) {
      throw invalid(
        element === "comment"
          ? `${key} ${shown(value)}: a comment may contain only letters, digits, spaces and : ; , . / - _ [ ]`
          : `${key} ${shown(value)}: a value may contain only letters, digits and : ; , . / - _ [ ]`,
      );
    }
  }
  const action = given.get("action");
  if (!action) throw invalid("firewall rule: action is required (accept or drop)");
  if (action.value !== "accept" && action.value !== "drop") throw invalid(`${action.key} ${shown(action.value)}: must be accept or drop`);
  const rule: FirewallRule = { action: action.value };

  const expire = given.get("expire");
  if (expire) {
    if (!/^[0-9]{1,15}$/.test(expire.value)) throw invalid(`${expire.key} ${shown(expire.value)}: a UNIX time in seconds (digits only)`);
    rule.expire = Number(expire.value);
  }
  const dsthost = given.get("dsthost");
  if (dsthost) rule.dsthost = parseDsthost(dsthost.key, dsthost.value);
  const proto = given.get("proto");
  if (proto) {
    if (proto.value !== "tcp" && proto.value !== "udp" && proto.value !== "icmp") {
      throw invalid(`${proto.key} ${shown(proto.value)}: must be tcp, udp or icmp`);
    }
    rule.proto = proto.value;
  }
  const special = given.get("specialtarget");
  if (special) {
    if (special.value !== "dns") throw invalid(`${special.key} ${shown(special.value)}: the only special target is dns`);
    rule.specialtarget = "dns";
  }
  const ports = given.get("dstports");
  if (ports) {
    const range = parsePorts(ports.key, ports.value);
    if (rule.proto !== "tcp" && rule.proto !== "udp") throw invalid(`${ports.key} ${shown(ports.value)}: only with proto=tcp or proto=udp`);
    rule.dstports = range;
  }
  const icmp = given.get("icmptype");
  if (icmp) {
    if (!/^[0-9]{1,3}$/.test(icmp.value) || Number(icmp.value) > 255) throw invalid(`${icmp.key} ${shown(icmp.value)}: an ICMP type is 0-255`);
    if (rule.proto !== "icmp") throw invalid(`${icmp.key} ${shown(icmp.value)}: only with proto=icmp`);
    rule.icmptype = Number(icmp.value);
  }
  const comment = given.get("comment");
  if (comment) rule.comment = comment.value;
  return rule;
}

function checkLine(line: string): void {
  if (typeof line !== "string") throw invalid("firewall rule: a rule is a line of text");
  if (line.length > MAX_FIREWALL_LINE_BYTES) throw invalid(`firewall rule: longer than ${MAX_FIREWALL_LINE_BYTES} bytes`);
  // Strict ASCII as admin.vm.firewall.Set (and printable: every element's character set is).
  const bad = /[^\x20-\x7e]/.exec(line);
  if (bad) throw invalid(`firewall rule: character ${shown(bad[0])} at position ${bad.index + 1}: only printable ASCII is allowed`);
}

function record(given: Map<Element, Given>, element: Element, key: string, value: string): void {
  const before = given.get(element);
  if (before) {
    throw invalid(
      before.key === key
        ? `${key}: given twice (each element at most once per rule)`
        : `${key}: ${before.key} is already given (at most one destination per rule)`,
    );
  }
  given.set(element, { key, value });
}

function canonical(key: string, aliases: Readonly<Record<string, Element>>): Element | undefined {
  if ((ELEMENTS as readonly string[]).includes(key)) return key as Element;
  return Object.hasOwn(aliases, key) ? aliases[key] : undefined;
}

function unknownElement(key: string, aliasNames: string): QvmError {
  return invalid(
    `unknown firewall rule element ${shown(key)}: the elements are action, dsthost (${aliasNames}), proto, dstports, icmptype, specialtarget, expire, comment`,
  );
}

/**
 * One admin API line (Qubes' Rule.from_api_string): `key=value` separated by single spaces,
 * everything after the first "comment=" is the comment (spaces included). Throws QvmError
 * INVALID_ARGUMENT naming the element and saying what it may be.
 */
export function parseRuleApi(line: string): FirewallRule {
  checkLine(line);
  const at = line.indexOf("comment=");
  const options = (at < 0 ? line : line.slice(0, at)).replace(/^ +| +$/g, "");
  const given = new Map<Element, Given>();
  if (options !== "") {
    for (const option of options.split(" ")) {
      if (option === "") throw invalid("firewall rule: elements are key=value separated by single spaces");
      const eq = option.indexOf("=");
      if (eq < 0) throw invalid(`firewall rule element ${shown(option)}: expected key=value`);
      const key = option.slice(0, eq);
      const element = canonical(key, API_ALIASES);
      if (!element || element === "comment") throw unknownElement(key, "dst4, dst6, dstname");
      record(given, element, key, option.slice(eq + 1));
    }
  }
  if (at >= 0) given.set("comment", { key: "comment", value: line.slice(at + "comment=".length) });
  return buildRule(given);
}

/** The admin API line in Qubes' api_rule order; dst4/dst6/dsthost by the kind of destination. */
export function formatRuleApi(rule: FirewallRule): string {
  const parts = [`action=${rule.action}`];
  if (rule.expire !== undefined) parts.push(`expire=${rule.expire}`);
  if (rule.dsthost !== undefined) parts.push(`${destinationKey(rule.dsthost)}=${rule.dsthost}`);
  if (rule.proto !== undefined) parts.push(`proto=${rule.proto}`);
  if (rule.specialtarget !== undefined) parts.push(`specialtarget=${rule.specialtarget}`);
  if (rule.dstports !== undefined) parts.push(`dstports=${rule.dstports[0]}-${rule.dstports[1]}`);
  if (rule.icmptype !== undefined) parts.push(`icmptype=${rule.icmptype}`);
  if (rule.comment !== undefined && rule.comment !== "") parts.push(`comment=${rule.comment}`);
  const line = parts.join(" ");
  // A rule built in code (not parsed) could hold anything; never emit a line we would refuse.
  parseRuleApi(line);
  return line;
}

function destinationKey(dsthost: string): "dst4" | "dst6" | "dsthost" {
  if (dsthost.includes(":")) return "dst6";
  return /^[0-9.]+\/[0-9]+$/.test(dsthost) ? "dst4" : "dsthost";
}

/**
 * A rule in qvm-firewall's command-line syntax: positional `<action> [<dsthost> [<proto>
 * [<dstports>|<icmptype>]]]` mixed with key=value elements (one argument each, so a comment with
 * spaces is one quoted argument). `expire=+N` means N seconds from `now` (UNIX seconds). Unlike
 * qvm-firewall, a repeated element is refused rather than the last one silently winning.
 */
export function parseRuleCli(args: readonly string[], now: number): FirewallRule {
  let order: Element[] = ["action", "dsthost", "proto", "dstports", "icmptype"];
  const given = new Map<Element, Given>();
  for (const arg of args) {
    checkLine(arg);
    const parts = arg.split("=");
    if (parts.length > 2) throw invalid(`rule element ${shown(arg)}: one "=" at most (key=value)`);
    let key: string;
    let value: string;
    let element: Element | undefined;
    if (parts.length === 1) {
      element = order[0];
      if (!element) throw invalid(`rule element ${shown(arg)}: too many positional elements (<action> [<dsthost> [<proto> [<dstports>|<icmptype>]]])`);
      key = element;
      value = arg;
    } else {
      key = parts[0] ?? "";
      value = parts[1] ?? "";
      element = canonical(key, CLI_ALIASES);
      if (!element) throw unknownElement(key, "dst4, dst6");
      if (element === "expire" && value.startsWith("+")) {
        if (!/^\+[0-9]{1,10}$/.test(value)) throw invalid(`expire ${shown(value)}: +N is N seconds from now (digits)`);
        value = String(Math.floor(now) + Number(value.slice(1)));
      }
    }
    record(given, element, key, value);
    const used = element;
    // After a protocol, the next positional element is the one that protocol takes.
    let skip: Element | undefined;
    if (used === "proto") skip = value === "icmp" ? "dstports" : value === "tcp" || value === "udp" ? "icmptype" : undefined;
    order = order.filter((e) => e !== used && e !== skip);
  }
  return buildRule(given);
}

/** Rules one admin API line each (blank lines skipped), all or nothing: the first bad line throws. */
export function parseRuleSet(text: string): FirewallRule[] {
  if (text.length > MAX_FIREWALL_RULES * (MAX_FIREWALL_LINE_BYTES + 2)) {
    throw invalid(`firewall rules: more than ${MAX_FIREWALL_RULES} rules of at most ${MAX_FIREWALL_LINE_BYTES} bytes`);
  }
  const rules: FirewallRule[] = [];
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (/^ *$/.test(line)) continue;
    if (rules.length === MAX_FIREWALL_RULES) throw invalid(`firewall rules: at most ${MAX_FIREWALL_RULES} rules per domain`);
    try {
      rules.push(parseRuleApi(line));
    } catch (err) {
      throw invalid(`firewall rules line ${i + 1}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return rules;
}

/** One api_rule line per rule, each ending in a newline (Qubes' admin.vm.firewall.Get). */
export function formatRuleSet(rules: readonly FirewallRule[]): string {
  if (rules.length > MAX_FIREWALL_RULES) throw invalid(`firewall rules: at most ${MAX_FIREWALL_RULES} rules per domain`);
  return rules.map((r) => `${formatRuleApi(r)}\n`).join("");
}

/** Whether the rule still applies at `now` (Qubes: expired once its second has passed). */
function isActive(rule: FirewallRule, now: number): boolean {
  return rule.expire === undefined || rule.expire > now;
}

export function activeRules(rules: readonly FirewallRule[], now: number): FirewallRule[] {
  return rules.filter((r) => isActive(r, now));
}

/** The earliest expire still ahead of `now`: when the rules must be pushed again. */
export function nextExpiry(rules: readonly FirewallRule[], now: number): number | undefined {
  let next: number | undefined;
  for (const r of rules) if (r.expire !== undefined && r.expire > now && (next === undefined || r.expire < next)) next = r.expire;
  return next;
}

/**
 * The `qvm firewall list` table, header first, as qvm-firewall prints it: rules numbered from
 * 0, "-" for a missing value, a one-port range as the port, expire as signed seconds from now.
 */
export function listRows(rules: readonly FirewallRule[], now: number): string[][] {
  const dash = (v: string | number | undefined) => (v === undefined ? "-" : String(v));
  const rows: string[][] = [[...FIREWALL_LIST_HEADER]];
  for (const [i, r] of rules.entries()) {
    const ports = r.dstports && (r.dstports[0] === r.dstports[1] ? String(r.dstports[0]) : `${r.dstports[0]}-${r.dstports[1]}`);
    const left = r.expire === undefined ? undefined : Math.round(r.expire - now);
    rows.push([
      String(i),
      r.action,
      dash(r.dsthost),
      dash(r.proto),
      dash(ports),
      dash(r.specialtarget),
      dash(r.icmptype),
      left === undefined ? "-" : `${left < 0 ? "" : "+"}${left}s`,
      dash(r.comment || undefined),
    ]);
  }
  return rows;
}
