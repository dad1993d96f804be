// One client's firewall as the body of its nft chain (qbs-<ip>), after Qubes' qubes-firewall:
// rules in order, first match decides, accept → accept, drop → reject admin-prohibited, and a
// reject after the last rule (Qubes' policy is always drop). Anything that cannot be rendered
// exactly (a line that does not parse, a host name without an address) makes the whole chain a
// reject: fail closed, never a partial ruleset.
import { MAX_FIREWALL_RULES, QvmError, isIPv4Address, parseRuleApi, type FirewallRule } from "@qvm/protocol/contracts";
import { VIRTUAL_DNS } from "./config.js";

export const REJECT_ADMIN = "reject with icmp type admin-prohibited";

/** Host name → its IPv4 addresses, as resolved when the rules were applied. */
export type HostAddresses = ReadonlyMap<string, readonly string[]>;

export function chainName(clientIp: string): string {
  return `qbs-${clientIp.replaceAll(".", "-")}`;
}

/** Parses a client's rule lines, all or nothing; the error names the rule by its number (from 1). */
export function parseClientRules(lines: readonly string[]): FirewallRule[] {
  if (lines.length > MAX_FIREWALL_RULES) throw new QvmError("INVALID_ARGUMENT", `more than ${MAX_FIREWALL_RULES} firewall rules`);
  return lines.map((line, i) => {
    try {
      return parseRuleApi(line);
    } catch (err) {
      throw new QvmError("INVALID_ARGUMENT", `firewall rule ${i + 1}: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
}

/** Normalized addresses always carry a prefix length; host names never contain "/". */
const isHostName = (dsthost: string) => !dsthost.includes("/");

/** The host names the IPv4 ruleset needs resolved (IPv6 destinations are not enforced here). */
export function hostNamesOf(rules: readonly FirewallRule[]): string[] {
  const names = new Set<string>();
  for (const r of rules) if (r.dsthost !== undefined && isHostName(r.dsthost)) names.add(r.dsthost);
  return [...names];
}

/** "a.b.c.d/n" with the host bits cleared (Qubes does not check them; nft would clear them too). */
function network(cidr: string): string | undefined {
  const [addr = "", prefixText = "32"] = cidr.split("/");
  const prefix = Number(prefixText);
  if (prefix === 0) return undefined; // 0.0.0.0/0 limits nothing (qubesadmin skips it too)
  if (prefix === 32) return addr;
  const n = addr.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  const masked = n - (n % 2 ** (32 - prefix));
  const octets = [24, 16, 8, 0].map((s) => Math.floor(masked / 2 ** s) % 256);
  return `${octets.join(".")}/${prefix}`;
}

function addressesOf(name: string, hosts: HostAddresses | undefined): string {
  const found = hosts?.get(name);
  if (!found || found.length === 0) throw new QvmError("FAILED_PRECONDITION", `host name ${name} has no IPv4 address`);
  const unique = [...new Set(found)].sort();
  const bad = unique.find((a) => !isIPv4Address(a));
  if (bad !== undefined) throw new QvmError("FAILED_PRECONDITION", `host name ${name} resolved to ${JSON.stringify(bad)}, not an IPv4 address`);
  return unique.length === 1 ? (unique[0] ?? "") : `{ ${unique.join(", ")} }`;
}

/** One rule as one nft rule, or undefined for a rule the IPv4 table does not enforce. */
export function renderRule(rule: FirewallRule, hosts: HostAddresses | undefined): string | undefined {
  const dst = rule.dsthost;
  // IPv6 rules belong to an ip6 table; IPv6 is not forwarded (enforcement is IPv4-only for now).
  if (dst?.includes(":")) return undefined;
  const daddr = dst === undefined ? undefined : isHostName(dst) ? addressesOf(dst, hosts) : network(dst);
  const matches: string[] = [];
  if (rule.specialtarget === "dns") {
    // As Qubes: DNS is tcp/udp port 53, so a dns rule for icmp or for other ports matches nothing.
    if (rule.proto === "icmp") return undefined;
    if (rule.dstports && (rule.dstports[0] !== 53 || rule.dstports[1] !== 53)) return undefined;
    // The original destination: a netvm with the uplink has already DNAT-ed 10.139.1.x by the
    // time the packet reaches forward.
    matches.push(`ct original ip daddr { ${VIRTUAL_DNS.join(", ")} }`);
    if (daddr !== undefined) matches.push(`ct original ip daddr ${daddr}`);
    matches.push(rule.proto ? `${rule.proto} dport 53` : "meta l4proto { tcp, udp } th dport 53");
  } else {
    if (daddr !== undefined) matches.push(`ip daddr ${daddr}`);
    if (rule.dstports) {
      const [low, high] = rule.dstports;
      matches.push(`${rule.proto} dport ${low === high ? low : `${low}-${high}`}`);
    } else if (rule.proto) {
      matches.push(`meta l4proto ${rule.proto}`);
      if (rule.icmptype !== undefined) matches.push(`icmp type ${rule.icmptype}`);
    }
  }
  matches.push(rule.action === "accept" ? "accept" : REJECT_ADMIN);
  return matches.join(" ");
}

/** Text safe inside an nft "#" comment: one line, no odd bytes. */
function commentText(why: string): string {
  return why.replace(/[^A-Za-z0-9 .,:;()/_"=-]/g, "?").slice(0, 200);
}

/**
 * The body of a client's chain. `failure` (a host name did not resolve...) or any error while
 * rendering gives a chain that only rejects.
 */
export function clientChainRules(lines: readonly string[], hosts: HostAddresses | undefined, failure?: string): string[] {
  const failClosed = (why: string) => [`# fail closed: ${commentText(why)}`, REJECT_ADMIN];
  if (failure !== undefined) return failClosed(failure);
  try {
    const rendered = parseClientRules(lines).flatMap((r) => renderRule(r, hosts) ?? []);
    return [...rendered, REJECT_ADMIN];
  } catch (err) {
    return failClosed(err instanceof Error ? err.message : String(err));
  }
}
