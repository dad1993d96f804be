// What each running domain is told about its network (the agent's SetNetwork), computed from
// the links as the files show them and the domains' properties. Pure: unit tested.
import type { agentV1 } from "@qvm/protocol";
import { VIRTUAL_DNS } from "../model/net-identity.js";
import { NET_SLOTS, slotMac } from "./addresses.js";

/** One running domain, as the network sees it. */
export interface NetDomain {
  name: string;
  ip: string;
  mac: string;
  providesNetwork: boolean;
  /** "", "passt" or "tap:NAME". */
  uplink: string;
  isTemplate: boolean;
  /** Its firewall, API lines with expired rules left out. */
  firewall: string[];
}

/** A link as it is: `client` holds `slot` in `netvm`. */
export interface LiveLink {
  client: string;
  netvm: string;
  slot: number;
}

export interface Uplink {
  mac: string;
  address: string;
  prefix: number;
  gateway: string;
  dns: string[];
}

export function guestNetworkConfig(self: NetDomain, domains: ReadonlyMap<string, NetDomain>, links: readonly LiveLink[], uplinkOf: (d: NetDomain) => Uplink | undefined): agentV1.SetNetworkRequest {
  const req: agentV1.SetNetworkRequest = { client: undefined, netvm: undefined, updatesProxyClient: self.isTemplate };
  const mine = links.find((l) => l.client === self.name);
  const netvm = mine && domains.get(mine.netvm);
  if (mine && netvm) {
    req.client = { mac: self.mac, ip: self.ip, gateway: netvm.ip, gatewayMac: slotMac(mine.slot), dns: [...VIRTUAL_DNS] };
  }
  if (self.providesNetwork) {
    const clientLinks: agentV1.ClientLink[] = [];
    for (const l of links.filter((x) => x.netvm === self.name).sort((a, b) => a.slot - b.slot)) {
      const c = domains.get(l.client);
      if (c) clientLinks.push({ slotMac: slotMac(l.slot), clientIp: c.ip, clientMac: c.mac, firewall: c.firewall });
    }
    req.netvm = {
      gateway: self.ip,
      uplink: uplinkOf(self),
      links: clientLinks,
      slotMacs: Array.from({ length: NET_SLOTS }, (_, s) => slotMac(s)),
    };
  }
  return req;
}
