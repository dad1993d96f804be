// The domain's whole nft ruleset as one script, after Qubes' qubes-ipv4.nft, qubes-antispoof.nft
// and qubes-firewall. Two tables are ours and are replaced whole in one transaction (`nft -f`
// applies a script atomically): "ip qvm" (anti-spoofing, DNS DNAT, masquerade, input) and
// "ip qvm-firewall" (forward, one chain per client). Other tables are left alone.
//
// Interfaces are matched by name ("vif*" = client links), not by interface group as Qubes does:
// apply.ts names every link before the ruleset is loaded, the anti-spoof set is keyed by name
// anyway, and a name needs no second step (`ip link set group`) that could lag behind a rename.
// Qubes' own qubes-firewall matches `iifname "vif*"` too.
import { chainName, clientChainRules, type HostAddresses } from "./client-chain.js";
import { VIRTUAL_DNS, slotIndex, slotName, type ClientLink, type GuestNetConfig } from "./config.js";

/** Client ip → (host name → IPv4 addresses). */
export type ResolvedHosts = ReadonlyMap<string, HostAddresses>;

interface Attached {
  link: ClientLink;
  ifname: string;
}

function attachedLinks(config: GuestNetConfig): Attached[] {
  const netvm = config.netvm;
  if (!netvm) return [];
  // A link whose slot is unknown gets no allow-set entry and no chain: its traffic is dropped.
  return netvm.links.flatMap((link) => {
    const i = slotIndex(netvm, link.slotMac);
    return i < 0 ? [] : [{ link, ifname: slotName(i) }];
  });
}

const set = (items: readonly string[]) => (items.length ? [`    elements = { ${items.join(", ")} }`] : []);

/** The chain body for each attached client, keyed by its ip (also what apply.ts compares). */
export function clientChains(config: GuestNetConfig, resolved: ResolvedHosts, failures: Readonly<Record<string, string>>): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const { link } of attachedLinks(config)) {
    const failure = Object.hasOwn(failures, link.clientIp) ? failures[link.clientIp] : undefined;
    chains.set(link.clientIp, clientChainRules(link.firewall, resolved.get(link.clientIp), failure));
  }
  return chains;
}

function dnsDnat(config: GuestNetConfig): string[] {
  const uplink = config.netvm?.uplink;
  if (!uplink) return [];
  const dns = "meta l4proto { tcp, udp } th dport 53";
  // Each virtual server gets a real one in turn (Qubes' qubes-setup-dnat-to-ns); with none,
  // DNS to the virtual servers is dropped rather than left to leak anywhere else.
  const rules = uplink.dns.length
    ? VIRTUAL_DNS.map((v, i) => `    ip daddr ${v} ${dns} dnat to ${uplink.dns[i % uplink.dns.length]}`)
    : [`    ip daddr { ${VIRTUAL_DNS.join(", ")} } ${dns} drop`];
  return ["  chain dnat-dns {", "    type nat hook prerouting priority dstnat; policy accept;", ...rules, "  }"];
}

/**
 * The nft script for `nft -f`. `resolved` holds each client's host names; a client in
 * `failures`, or whose rules do not parse or name an unresolved host, gets a chain that only
 * rejects; a client without a chain falls to the forward policy, drop. Expired rules are the
 * host's business (it never sends them), so `expire` is ignored here.
 */
export function renderRuleset(config: GuestNetConfig, resolved: ResolvedHosts, failures: Readonly<Record<string, string>>): string {
  const attached = attachedLinks(config);
  const chains = clientChains(config, resolved, failures);
  const out = [
    "# qvm guest agent (guest-agent/src/net): replaces tables ip qvm and ip qvm-firewall in one transaction",
    // Creating before deleting makes the delete succeed whether or not the table exists.
    "table ip qvm {}",
    "delete table ip qvm",
    "table ip qvm-firewall {}",
    "delete table ip qvm-firewall",
    "",
    "table ip qvm {",
    // Anti-spoofing: a client link carries only its client's address, and a client's address
    // arrives only on its link (and leaves only through one: nothing for a client goes upstream
    // when its link is down).
    "  set allowed {",
    "    type ifname . ipv4_addr",
    ...set(attached.map((a) => `"${a.ifname}" . ${a.link.clientIp}`)),
    "  }",
    "  set downstream {",
    "    type ipv4_addr",
    ...set(attached.map((a) => a.link.clientIp)),
    "  }",
    "  chain prerouting {",
    "    type filter hook prerouting priority raw; policy accept;",
    '    iifname "vif*" goto antispoof',
    "    ip saddr @downstream drop",
    "  }",
    "  chain antispoof {",
    "    iifname . ip saddr @allowed accept",
    "    drop",
    "  }",
    "  chain postrouting-antispoof {",
    "    type filter hook postrouting priority raw; policy accept;",
    '    oifname != "vif*" ip daddr @downstream drop',
    "  }",
    ...dnsDnat(config),
    // NAT at every hop: whatever leaves towards the uplink carries this domain's address.
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    '    oifname "vif*" accept',
    '    oifname "lo" accept',
    "    masquerade",
    "  }",
    // As Qubes: nothing new comes in, clients may ping their gateway and are told no otherwise.
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    "    ct state invalid drop",
    '    iifname "vif*" udp dport 68 drop',
    "    ct state established,related accept",
    '    iifname "vif*" meta l4proto icmp accept',
    '    iifname "lo" accept',
    '    iifname "vif*" reject with icmp type host-prohibited',
    "  }",
    "}",
    "",
    "table ip qvm-firewall {",
    // Nothing new is forwarded into a client (no inbound, no client to client); what a client
    // starts goes through its own chain; anything else meets the policy.
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    "    ct state invalid drop",
    "    ct state established,related accept",
    '    oifname "vif*" drop',
    ...[...chains.keys()].map((ip) => `    ip saddr ${ip} jump ${chainName(ip)}`),
    "  }",
    ...[...chains].flatMap(([ip, rules]) => [`  chain ${chainName(ip)} {`, ...rules.map((r) => `    ${r}`), "  }"]),
    "}",
    "",
  ];
  return out.join("\n");
}

/** The same ruleset with every client failed: what is loaded when the real one is refused. */
export function renderFailClosed(config: GuestNetConfig, why: string): string {
  const failures: Record<string, string> = {};
  for (const l of config.netvm?.links ?? []) failures[l.clientIp] = why;
  return renderRuleset(config, new Map(), failures);
}
