// The network configuration the host sends a domain, and its validation. Every value here ends up
// in an `ip` argument or in the nft script, so each is checked against a strict shape before
// anything runs: nothing the host sends (or a compromised path to it) can add nft syntax.
import { MAX_FIREWALL_RULES, QvmError, isIPv4Address } from "@qvm/protocol/contracts";

export interface ClientNet {
  mac: string;
  ip: string;
  gateway: string;
  gatewayMac: string;
  dns: string[];
}
export interface UplinkNet {
  mac: string;
  address: string;
  prefix: number;
  gateway: string;
  dns: string[];
}
export interface ClientLink {
  slotMac: string;
  clientIp: string;
  clientMac: string;
  /** Qubes API rule lines (parseRuleSet); empty array = allow all is NOT implied: the host always sends at least one rule */
  firewall: string[];
}
export interface NetvmNet {
  /** the netvm's own address, put as /32 on every client link (the clients' gateway) */
  gateway: string;
  uplink?: UplinkNet;
  links: ClientLink[];
  /** every link interface MAC the VM has, used or not */
  slotMacs: string[];
}
export interface GuestNetConfig {
  client?: ClientNet;
  netvm?: NetvmNet;
}
export interface ApplyResult {
  /** per client ip whose rules could not be applied (a host name did not resolve...): why; that client's traffic is dropped */
  failures: Record<string, string>;
}

/** Qubes' virtual DNS servers: clients ask these, the netvm with the uplink DNATs them. */
export const VIRTUAL_DNS = ["10.139.1.1", "10.139.1.2"] as const;
/** The uplink or the link to the netvm. */
export const OWN_LINK = "eth0";
/** Client links are vif0, vif1, … by their index in slotMacs. */
export const slotName = (index: number): string => `vif${index}`;
/** More slots than this is not a configuration, it is a mistake (interface names, nft sets). */
export const MAX_SLOTS = 256;
const MAX_DNS = 8;

const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

function invalid(message: string): QvmError {
  return new QvmError("INVALID_ARGUMENT", `network configuration: ${message}`);
}

function checkIp(what: string, value: unknown): void {
  if (typeof value !== "string" || !isIPv4Address(value)) throw invalid(`${what} ${JSON.stringify(value)} is not an IPv4 address`);
}

/** MACs compare lowercase, as sysfs writes them. */
function checkMac(what: string, value: unknown): void {
  if (typeof value !== "string" || !MAC.test(value.toLowerCase())) throw invalid(`${what} ${JSON.stringify(value)} is not a MAC address (xx:xx:xx:xx:xx:xx)`);
}

function checkDns(what: string, dns: unknown): void {
  if (!Array.isArray(dns) || dns.length > MAX_DNS) throw invalid(`${what} must be a list of at most ${MAX_DNS} IPv4 addresses`);
  dns.forEach((d, i) => checkIp(`${what}[${i}]`, d));
}

/** Throws QvmError INVALID_ARGUMENT saying what is wrong; the firewall lines are parsed later, per client. */
export function validateNetConfig(config: GuestNetConfig): void {
  const { client, netvm } = config;
  if (client) {
    checkMac("client.mac", client.mac);
    checkIp("client.ip", client.ip);
    checkIp("client.gateway", client.gateway);
    checkMac("client.gatewayMac", client.gatewayMac);
    checkDns("client.dns", client.dns);
  }
  if (!netvm) return;
  checkIp("netvm.gateway", netvm.gateway);
  const { uplink } = netvm;
  if (uplink) {
    if (client) throw invalid("a domain has either a link to its netvm (client) or an uplink, not both");
    checkMac("netvm.uplink.mac", uplink.mac);
    checkIp("netvm.uplink.address", uplink.address);
    if (!Number.isInteger(uplink.prefix) || uplink.prefix < 0 || uplink.prefix > 32) throw invalid(`netvm.uplink.prefix ${uplink.prefix} is not 0-32`);
    checkIp("netvm.uplink.gateway", uplink.gateway);
    checkDns("netvm.uplink.dns", uplink.dns);
  }
  if (!Array.isArray(netvm.slotMacs) || netvm.slotMacs.length > MAX_SLOTS) throw invalid(`netvm.slotMacs must be a list of at most ${MAX_SLOTS} MACs`);
  const slots = new Set<string>();
  netvm.slotMacs.forEach((m, i) => {
    checkMac(`netvm.slotMacs[${i}]`, m);
    if (slots.has(m.toLowerCase())) throw invalid(`netvm.slotMacs[${i}] ${m} is listed twice`);
    slots.add(m.toLowerCase());
  });
  const own = client?.mac ?? uplink?.mac;
  if (own && slots.has(own.toLowerCase())) throw invalid(`${own} is both the domain's own link and a client slot`);
  if (!Array.isArray(netvm.links)) throw invalid("netvm.links must be a list");
  const usedSlots = new Set<string>();
  const ips = new Set<string>();
  netvm.links.forEach((l, i) => {
    const what = `netvm.links[${i}]`;
    checkMac(`${what}.slotMac`, l.slotMac);
    if (!slots.has(l.slotMac.toLowerCase())) throw invalid(`${what}.slotMac ${l.slotMac} is not one of netvm.slotMacs`);
    if (usedSlots.has(l.slotMac.toLowerCase())) throw invalid(`${what}.slotMac ${l.slotMac} is used by two clients`);
    usedSlots.add(l.slotMac.toLowerCase());
    checkIp(`${what}.clientIp`, l.clientIp);
    if (ips.has(l.clientIp)) throw invalid(`${what}.clientIp ${l.clientIp} is used by two clients`);
    if (l.clientIp === netvm.gateway) throw invalid(`${what}.clientIp ${l.clientIp} is the netvm's own address`);
    ips.add(l.clientIp);
    checkMac(`${what}.clientMac`, l.clientMac);
    if (!Array.isArray(l.firewall) || l.firewall.some((r) => typeof r !== "string")) throw invalid(`${what}.firewall must be a list of rule lines`);
    if (l.firewall.length > MAX_FIREWALL_RULES) throw invalid(`${what}.firewall has more than ${MAX_FIREWALL_RULES} rules`);
  });
}

/** The interface name of the slot a client link uses (by the slot's index in slotMacs). */
export function slotIndex(netvm: NetvmNet, slotMac: string): number {
  return netvm.slotMacs.findIndex((m) => m.toLowerCase() === slotMac.toLowerCase());
}
