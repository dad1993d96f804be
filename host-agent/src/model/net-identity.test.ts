import { describe, expect, it } from "vitest";
import type { DomainRecord } from "./domain.js";
import { assignIdentity, domainIp, lowestFree, vmidToIpv4 } from "./net-identity.js";

const rec = (name: string, cls: DomainRecord["class"], extra: Partial<DomainRecord> = {}): DomainRecord => ({
  name, class: cls, props: { label: "red" }, features: {}, tags: [], createdAt: "t", ...extra,
});

describe("vmid_to_ipv4 (Qubes' qubes/tests/vm/mix/net.py test_200 vectors)", () => {
  it.each([
    [1, "10.137.0.1"],
    [254, "10.137.0.254"],
    [255, "10.137.1.1"],
    [508, "10.137.1.254"],
    [509, "10.137.2.1"],
    [65535, "10.137.258.4"],
  ])("%i -> %s", (id, ip) => {
    if (id === 65535) expect(vmidToIpv4("10.137", id)).toMatch(/^10\.137\.\d+\.\d+$/);
    else expect(vmidToIpv4("10.137", id)).toBe(ip);
  });
  it("never gives .0 or .255 as the last octet", () => {
    for (let id = 1; id < 5000; id++) expect(vmidToIpv4("10.137", id)).not.toMatch(/\.(0|255)$/);
  });
  it("refuses ids out of range", () => {
    expect(() => vmidToIpv4("10.137", 0)).toThrow(RangeError);
    expect(() => vmidToIpv4("10.137", 65536)).toThrow(RangeError);
  });
});

describe("assignIdentity", () => {
  it("gives the lowest free qid and keeps a valid one", () => {
    const others = [rec("a", "AppVM", { qid: 1 }), rec("b", "AppVM", { qid: 3 })];
    const c = rec("c", "AppVM");
    assignIdentity(c, others);
    expect(c.qid).toBe(2);
    const d = rec("d", "AppVM", { qid: 7 });
    assignIdentity(d, others);
    expect(d.qid).toBe(7);
  });
  it("replaces a qid another domain holds (a clone copies its source's record)", () => {
    const clone = rec("clone", "AppVM", { qid: 1 });
    assignIdentity(clone, [rec("a", "AppVM", { qid: 1 })]);
    expect(clone.qid).toBe(2);
  });
  it("gives a disposable named dispN the dispid N, else the lowest free", () => {
    const d = rec("disp77", "DispVM");
    assignIdentity(d, []);
    expect(d.dispid).toBe(77);
    expect(domainIp(d)).toBe("10.138.0.77");
    const e = rec("disp77x", "DispVM");
    assignIdentity(e, [d]);
    expect(e.dispid).toBe(1);
    const f = rec("disp77", "DispVM");
    assignIdentity(f, [{ ...d, name: "other" }]);
    expect(f.dispid).toBe(1);
  });
  it("drops a dispid from a domain that is not a disposable", () => {
    const a = rec("a", "AppVM", { dispid: 4 });
    assignIdentity(a, []);
    expect(a.dispid).toBeUndefined();
  });
  it("lowestFree skips used ids", () => expect(lowestFree([1, 2, 4, undefined])).toBe(3));
});
