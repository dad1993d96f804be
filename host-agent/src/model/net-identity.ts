// A domain's network identity, as Qubes derives it (qubes-core-admin: qubes/vm/mix/net.py): a
// stable qid per domain and a dispid per disposable, given at creation and never reused while
// the domain exists, and the addresses that follow from them. Pure: unit tested against Qubes'
// own test vectors.
import type { DomainRecord } from "./domain.js";

/** Qubes' qid space is 16 bits; 0 is dom0 (here: the host, which has no address on any link). */
export const MAX_QID = 65535;
/** Every domain has this MAC on its one link: each link is its own L2 segment (as in Qubes). */
export const DEFAULT_MAC = "00:16:3e:5e:6c:00";
/** The DNS addresses every networked domain uses; each netvm redirects them upstream. */
export const VIRTUAL_DNS = ["10.139.1.1", "10.139.1.2"] as const;
export const DOMAIN_PREFIX = "10.137";
export const DISPOSABLE_PREFIX = "10.138";

/**
 * Qubes' vmid_to_ipv4: below 255 the id is the last octet; above, it spreads over two octets so
 * that neither is ever 0 or 255 (254 -> x.0.254, 255 -> x.1.1, 508 -> x.1.254, 509 -> x.2.1).
 */
export function vmidToIpv4(prefix: string, vmid: number): string {
  if (!Number.isInteger(vmid) || vmid < 1 || vmid > MAX_QID) throw new RangeError(`vmid ${vmid} is out of range 1-${MAX_QID}`);
  if (vmid < 255) return `${prefix}.0.${vmid}`;
  const v = vmid - 1;
  return `${prefix}.${Math.floor(v / 254)}.${(v % 254) + 1}`;
}

/** The address a domain has on its link: disposables from 10.138 by dispid, others 10.137 by qid. */
export function domainIp(rec: Pick<DomainRecord, "class" | "qid" | "dispid">): string {
  if (rec.class === "DispVM" && rec.dispid) return vmidToIpv4(DISPOSABLE_PREFIX, rec.dispid);
  return rec.qid ? vmidToIpv4(DOMAIN_PREFIX, rec.qid) : "";
}

/** The lowest id from 1 that none of `used` has. */
export function lowestFree(used: Iterable<number | undefined>): number {
  const taken = new Set(used);
  for (let id = 1; id <= MAX_QID; id++) if (!taken.has(id)) return id;
  throw new RangeError(`all ${MAX_QID} ids are in use`);
}

/**
 * Gives `record` a qid (and a dispid when it is a DispVM) that no other domain has. A disposable
 * named dispN keeps N as its dispid when free, so its name and address agree.
 */
export function assignIdentity(record: DomainRecord, others: readonly DomainRecord[]): void {
  const peers = others.filter((o) => o.name !== record.name);
  const qids = new Set(peers.map((o) => o.qid));
  if (!record.qid || qids.has(record.qid)) record.qid = lowestFree(qids);
  if (record.class !== "DispVM") {
    delete record.dispid;
    return;
  }
  const dispids = new Set(peers.map((o) => o.dispid));
  const fromName = /^disp([1-9]\d{0,4})$/.exec(record.name)?.[1];
  const wanted = record.dispid ?? (fromName ? Number(fromName) : undefined);
  record.dispid = wanted && wanted <= MAX_QID && !dispids.has(wanted) ? wanted : lowestFree(dispids);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** A unicast MAC in lowercase colon form; the error says what is wrong. */
export function checkMac(text: string): string {
  const mac = text.toLowerCase();
  if (!MAC_RE.test(mac)) throw new Error(`"${text}" is not a MAC address like ${DEFAULT_MAC}`);
  if (parseInt(mac.slice(0, 2), 16) & 1) throw new Error(`${text} is a multicast address; a domain needs a unicast one`);
  return mac;
}
