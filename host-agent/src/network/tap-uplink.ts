// sys-net's uplink on a tap device the administrator made (`qvm prefs sys-net uplink tap:NAME`),
// bridged to a LAN or routed by the host. The template runs no DHCP client, so the addressing is
// static and comes from the domain's features, where Qubes keeps per-domain network settings:
//   net.uplink-address  CIDR, e.g. 192.168.1.50/24
//   net.uplink-gateway  IPv4, in that network
//   net.uplink-dns      IPv4 addresses separated by spaces
// Each is checked when sys-net starts (a missing or bad one refuses the start, naming it) and
// again whenever the network is reconciled.
import { QvmError } from "@qvm/protocol";
import { isIPv4Address } from "@qvm/protocol/contracts";
import { UPLINK_MAC } from "./addresses.js";
import type { Uplink } from "./guest-config.js";

export const TAP_UPLINK_FEATURES = { address: "net.uplink-address", gateway: "net.uplink-gateway", dns: "net.uplink-dns" } as const;
const EXAMPLES = { address: "192.168.1.50/24", gateway: "192.168.1.1", dns: "'192.168.1.1 9.9.9.9'" } as const;
/** What the guest agent accepts. */
const MAX_DNS = 8;

/** The device of a `tap:NAME` uplink; undefined for any other uplink. */
export function tapDeviceOf(uplink: string): string | undefined {
  return uplink.startsWith("tap:") ? uplink.slice("tap:".length) : undefined;
}

const toInt = (ip: string) => ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
const maskOf = (prefix: number) => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** sys-net's view of its tap uplink, from its features; FAILED_PRECONDITION naming the feature to fix. */
export function tapUplink(domain: string, features: Readonly<Record<string, string>>): Uplink {
  const problem = (key: keyof typeof TAP_UPLINK_FEATURES, what: string) =>
    new QvmError(
      "FAILED_PRECONDITION",
      `${domain}'s uplink is a tap device, whose addressing comes from its features: ${TAP_UPLINK_FEATURES[key]} ${what}; e.g. \`qvm features ${domain} ${TAP_UPLINK_FEATURES[key]} ${EXAMPLES[key]}\``,
    );
  const get = (key: keyof typeof TAP_UPLINK_FEATURES) => {
    const value = features[TAP_UPLINK_FEATURES[key]]?.trim();
    if (!value) throw problem(key, "is not set");
    return value;
  };

  const cidr = get("address");
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr);
  const prefix = Number(m?.[2]);
  if (!m || !isIPv4Address(m[1]!) || prefix < 1 || prefix > 32) throw problem("address", `${JSON.stringify(cidr)} is not an IPv4 address with a prefix length 1-32`);
  const address = m[1]!;
  const mask = maskOf(prefix);
  const host = toInt(address) & ~mask;
  if (prefix <= 30 && (host === 0 || host === ~mask >>> 0)) throw problem("address", `${JSON.stringify(cidr)} is the network's own address or its broadcast address`);

  const gateway = get("gateway");
  if (!isIPv4Address(gateway)) throw problem("gateway", `${JSON.stringify(gateway)} is not an IPv4 address`);
  if (gateway === address) throw problem("gateway", `${gateway} is sys-net's own address`);
  // With a /32 every gateway is off-link (the route says onlink); otherwise it must be on the network.
  if (prefix < 32 && ((toInt(gateway) & mask) >>> 0 !== (toInt(address) & mask) >>> 0)) throw problem("gateway", `${gateway} is not in ${cidr}'s network`);

  const dnsText = get("dns");
  const dns = dnsText.split(/\s+/);
  if (dns.length > MAX_DNS || dns.some((d) => !isIPv4Address(d))) throw problem("dns", `${JSON.stringify(dnsText)} is not 1-${MAX_DNS} IPv4 addresses separated by spaces`);

  return { mac: UPLINK_MAC, address, prefix, gateway, dns };
}
