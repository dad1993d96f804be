import { parseRuleApi } from "@qvm/protocol/contracts";
import { describe, expect, it } from "vitest";
import { REJECT_ADMIN, chainName, clientChainRules, hostNamesOf, parseClientRules, renderRule } from "./client-chain.js";

const hosts = new Map([
  ["example.com", ["93.184.216.34"]],
  ["multi.example", ["10.1.1.2", "10.1.1.1", "10.1.1.2"]],
]);
const rule = (line: string) => renderRule(parseRuleApi(line), hosts);

describe("one rule as one nft rule", () => {
  it.each([
    ["action=accept", "accept"],
    ["action=drop", REJECT_ADMIN],
    ["action=accept dst4=1.2.3.4", "ip daddr 1.2.3.4 accept"],
    ["action=accept dst4=10.0.0.0/8", "ip daddr 10.0.0.0/8 accept"],
    // host bits are cleared, as nft would
    ["action=accept dst4=10.1.2.3/8", "ip daddr 10.0.0.0/8 accept"],
    ["action=accept dst4=192.168.77.200/27", "ip daddr 192.168.77.192/27 accept"],
    // /0 limits nothing
    ["action=drop dst4=0.0.0.0/0 proto=tcp", `meta l4proto tcp ${REJECT_ADMIN}`],
    ["action=accept dsthost=example.com", "ip daddr 93.184.216.34 accept"],
    ["action=accept dsthost=multi.example proto=tcp dstports=443", "ip daddr { 10.1.1.1, 10.1.1.2 } tcp dport 443 accept"],
    ["action=accept proto=udp dstports=1000-2000", "udp dport 1000-2000 accept"],
    ["action=accept proto=udp", "meta l4proto udp accept"],
    ["action=drop proto=icmp icmptype=8", `meta l4proto icmp icmp type 8 ${REJECT_ADMIN}`],
    ["action=accept proto=icmp", "meta l4proto icmp accept"],
    // DNS: the original destination (before a netvm's DNAT), tcp and udp port 53
    ["action=accept specialtarget=dns", "ct original ip daddr { 10.139.1.1, 10.139.1.2 } meta l4proto { tcp, udp } th dport 53 accept"],
    ["action=accept specialtarget=dns proto=udp", "ct original ip daddr { 10.139.1.1, 10.139.1.2 } udp dport 53 accept"],
    ["action=drop specialtarget=dns proto=tcp dstports=53", `ct original ip daddr { 10.139.1.1, 10.139.1.2 } tcp dport 53 ${REJECT_ADMIN}`],
    [
      "action=accept specialtarget=dns dst4=10.139.1.1",
      "ct original ip daddr { 10.139.1.1, 10.139.1.2 } ct original ip daddr 10.139.1.1 meta l4proto { tcp, udp } th dport 53 accept",
    ],
  ])("%s", (line, nft) => {
    expect(rule(line)).toBe(nft);
  });

  it.each([
    // as Qubes: a dns rule for other ports or for icmp matches nothing
    "action=accept specialtarget=dns proto=tcp dstports=80",
    "action=accept specialtarget=dns proto=udp dstports=1-100",
    "action=accept specialtarget=dns proto=icmp",
    // IPv6 is not enforced by the ip table
    "action=accept dst6=2001:db8::/32",
    "action=drop dst6=::1 proto=tcp dstports=22",
  ])("%s is not an IPv4 rule", (line) => {
    expect(rule(line)).toBeUndefined();
  });

  it("refuses a host name without addresses (the chain then fails closed)", () => {
    expect(() => renderRule(parseRuleApi("action=accept dsthost=unknown.example"), hosts)).toThrow(/unknown.example has no IPv4 address/);
    expect(() => renderRule(parseRuleApi("action=accept dsthost=x.example"), new Map([["x.example", ["1.2.3.4; flush ruleset"]]]))).toThrow(
      /not an IPv4 address/,
    );
  });
});

describe("a client's chain", () => {
  it("is the rules in order, then a reject", () => {
    expect(clientChainRules(["action=accept proto=tcp dstports=443", "action=drop proto=icmp", "action=accept dst6=::1"], hosts)).toEqual([
      "tcp dport 443 accept",
      `meta l4proto icmp ${REJECT_ADMIN}`,
      REJECT_ADMIN,
    ]);
    expect(clientChainRules([], hosts)).toEqual([REJECT_ADMIN]);
  });

  it("fails closed on a failure, a bad line or an unresolved name", () => {
    expect(clientChainRules(["action=accept"], hosts, "dsthost x did not resolve")).toEqual(["# fail closed: dsthost x did not resolve", REJECT_ADMIN]);
    const bad = clientChainRules(["action=accept", "action=allow"], hosts);
    expect(bad).toEqual([expect.stringMatching(/^# fail closed: firewall rule 2: action "allow"/), REJECT_ADMIN]);
    expect(clientChainRules(["action=accept dsthost=nowhere.example"], hosts)).toEqual([expect.stringContaining("nowhere.example"), REJECT_ADMIN]);
  });

  it("keeps a failure reason on one comment line", () => {
    const [comment] = clientChainRules([], hosts, "bad\n}\nflush ruleset {");
    expect(comment).toBe("# fail closed: bad???flush ruleset ?");
  });

  it("names chains after the client's address", () => {
    expect(chainName("10.137.0.5")).toBe("qbs-10-137-0-5");
  });

  it("lists the host names to resolve, once each, not addresses", () => {
    const rules = parseClientRules(["action=accept dsthost=a.example", "action=drop dst4=1.2.3.4", "action=accept dsthost=a.example proto=tcp", "action=accept dsthost=b"]);
    expect(hostNamesOf(rules)).toEqual(["a.example", "b"]);
  });

  it("parses all or nothing, naming the rule", () => {
    expect(() => parseClientRules(["action=accept", "proto=tcp"])).toThrow(/firewall rule 2: firewall rule: action is required/);
    expect(() => parseClientRules(Array.from({ length: 1001 }, () => "action=accept"))).toThrow(/more than 1000/);
  });
});
