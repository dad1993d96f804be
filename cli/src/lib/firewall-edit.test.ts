import { describe, expect, it } from "vitest";
import { parseRuleApi, type FirewallRule } from "@qvm/protocol/contracts";
import { applyFirewallEdit, formatFirewallList } from "./firewall-edit.js";

const rules = (...lines: string[]): FirewallRule[] => lines.map((l) => parseRuleApi(l));
const three = rules("action=drop dst4=10.0.0.0/8", "action=accept proto=tcp dstports=443-443", "action=drop");

describe("qvm firewall's local edits", () => {
  it("adds at the end, or before rule N (N = the count: at the end)", () => {
    const r = parseRuleApi("action=accept specialtarget=dns");
    expect(applyFirewallEdit("work", three, { kind: "add", rule: r })).toEqual([...three, r]);
    expect(applyFirewallEdit("work", three, { kind: "add", rule: r, before: 0 })).toEqual([r, ...three]);
    expect(applyFirewallEdit("work", three, { kind: "add", rule: r, before: 3 })).toEqual([...three, r]);
    expect(() => applyFirewallEdit("work", three, { kind: "add", rule: r, before: 4 })).toThrow("--before 4: work has rules 0-2 (`qvm firewall work list`); give 0-3 (3: at the end)");
    expect(applyFirewallEdit("work", [], { kind: "add", rule: r, before: 0 })).toEqual([r]);
  });

  it("deletes by number, or the rule written the same (dstports 443 is 443-443)", () => {
    expect(applyFirewallEdit("work", three, { kind: "del", ruleNo: 1 })).toEqual([three[0], three[2]]);
    expect(applyFirewallEdit("work", three, { kind: "del", rule: parseRuleApi("action=accept proto=tcp dstports=443") })).toEqual([three[0], three[2]]);
    expect(() => applyFirewallEdit("work", three, { kind: "del", ruleNo: 3 })).toThrow("--rule-no 3: work has rules 0-2");
    expect(() => applyFirewallEdit("work", [], { kind: "del", ruleNo: 0 })).toThrow("--rule-no 0: work has no rules");
    expect(() => applyFirewallEdit("work", three, { kind: "del", rule: parseRuleApi("action=accept") })).toThrow(
      expect.objectContaining({ code: "NOT_FOUND", message: expect.stringContaining('work has no rule "action=accept"') }),
    );
  });

  it("resets to the one rule action=accept, and leaves its input alone", () => {
    const before = structuredClone(three);
    expect(applyFirewallEdit("work", three, { kind: "reset" })).toEqual([{ action: "accept" }]);
    applyFirewallEdit("work", three, { kind: "del", ruleNo: 0 });
    expect(three).toEqual(before);
  });

  it("lists in Qubes' columns, expiry in seconds from now", () => {
    expect(formatFirewallList(rules("action=accept expire=1000 proto=udp dstports=53-54 comment=dns, for now"), 400)).toBe(
      "NO  ACTION  HOST  PROTOCOL  PORT(S)  SPECIAL TARGET  ICMP TYPE  EXPIRE  COMMENT\n0   accept  -     udp       53-54    -               -          +600s   dns, for now\n",
    );
  });
});
