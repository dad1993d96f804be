import { describe, expect, it } from "vitest";
import { REJECT_ADMIN } from "./client-chain.js";
import { renderFailClosed, renderRuleset } from "./ruleset.js";
import { appVm, sysFirewall, sysNet } from "./testing.js";

const resolved = new Map([["10.137.0.5", new Map([["example.com", ["93.184.216.34"]]])]]);

/** The lines of one chain's body, trimmed. */
function chain(script: string, name: string): string[] {
  const lines = script.split("\n");
  const start = lines.findIndex((l) => l.trim() === `chain ${name} {`);
  if (start < 0) throw new Error(`no chain ${name}`);
  const end = lines.findIndex((l, i) => i > start && l.trim() === "}");
  return lines.slice(start + 1, end).map((l) => l.trim());
}

describe("renderRuleset", () => {
  const script = renderRuleset(sysNet(), resolved, {});

  it("replaces only its own two tables, in one script", () => {
    expect(script).not.toMatch(/flush ruleset/);
    expect(script.split("\n").slice(1, 5)).toEqual(["table ip qvm {}", "delete table ip qvm", "table ip qvm-firewall {}", "delete table ip qvm-firewall"]);
    expect(script.match(/^table ip qvm \{$/gm)).toHaveLength(1);
    expect(script.match(/^table ip qvm-firewall \{$/gm)).toHaveLength(1);
  });

  it("lets a client link carry only its client's address, and that address only on it", () => {
    expect(script).toContain('elements = { "vif0" . 10.137.0.5, "vif2" . 10.137.0.6 }');
    expect(script).toContain("elements = { 10.137.0.5, 10.137.0.6 }");
    expect(chain(script, "prerouting")).toEqual(["type filter hook prerouting priority raw; policy accept;", 'iifname "vif*" goto antispoof', "ip saddr @downstream drop"]);
    expect(chain(script, "antispoof")).toEqual(["iifname . ip saddr @allowed accept", "drop"]);
    expect(chain(script, "postrouting-antispoof")).toContain('oifname != "vif*" ip daddr @downstream drop');
  });

  it("DNATs the virtual DNS servers to the uplink's, in turn", () => {
    expect(chain(script, "dnat-dns")).toEqual([
      "type nat hook prerouting priority dstnat; policy accept;",
      "ip daddr 10.139.1.1 meta l4proto { tcp, udp } th dport 53 dnat to 192.168.122.1",
      "ip daddr 10.139.1.2 meta l4proto { tcp, udp } th dport 53 dnat to 9.9.9.9",
    ]);
    const one = sysNet();
    if (one.netvm?.uplink) one.netvm.uplink.dns = ["1.1.1.1"];
    expect(chain(renderRuleset(one, resolved, {}), "dnat-dns")).toEqual([
      "type nat hook prerouting priority dstnat; policy accept;",
      "ip daddr 10.139.1.1 meta l4proto { tcp, udp } th dport 53 dnat to 1.1.1.1",
      "ip daddr 10.139.1.2 meta l4proto { tcp, udp } th dport 53 dnat to 1.1.1.1",
    ]);
    const none = sysNet();
    if (none.netvm?.uplink) none.netvm.uplink.dns = [];
    expect(chain(renderRuleset(none, resolved, {}), "dnat-dns")).toEqual([
      "type nat hook prerouting priority dstnat; policy accept;",
      "ip daddr { 10.139.1.1, 10.139.1.2 } meta l4proto { tcp, udp } th dport 53 drop",
    ]);
  });

  it("masquerades everything leaving that is not for a client", () => {
    expect(chain(script, "postrouting")).toEqual(["type nat hook postrouting priority srcnat; policy accept;", 'oifname "vif*" accept', 'oifname "lo" accept', "masquerade"]);
  });

  it("lets clients ping their gateway and refuses them anything else on it", () => {
    expect(chain(script, "input")).toEqual([
      "type filter hook input priority filter; policy drop;",
      "ct state invalid drop",
      'iifname "vif*" udp dport 68 drop',
      "ct state established,related accept",
      'iifname "vif*" meta l4proto icmp accept',
      'iifname "lo" accept',
      'iifname "vif*" reject with icmp type host-prohibited',
    ]);
  });

  it("forwards nothing new into a client and sends each client through its own chain", () => {
    expect(chain(script, "forward")).toEqual([
      "type filter hook forward priority filter; policy drop;",
      "ct state invalid drop",
      "ct state established,related accept",
      'oifname "vif*" drop',
      "ip saddr 10.137.0.5 jump qbs-10-137-0-5",
      "ip saddr 10.137.0.6 jump qbs-10-137-0-6",
    ]);
    expect(chain(script, "qbs-10-137-0-5")).toEqual([
      "ct original ip daddr { 10.139.1.1, 10.139.1.2 } meta l4proto { tcp, udp } th dport 53 accept",
      "ip daddr 93.184.216.34 tcp dport 443 accept",
      "ip daddr 192.168.0.0/16 tcp dport 22-23 accept",
      `meta l4proto icmp icmp type 8 ${REJECT_ADMIN}`,
      "meta l4proto icmp icmp type 255 accept",
      "meta l4proto icmp accept",
      REJECT_ADMIN,
      REJECT_ADMIN,
    ]);
    expect(chain(script, "qbs-10-137-0-6")).toEqual(["accept", REJECT_ADMIN]);
  });

  it("fails a client closed when it is in failures, its names did not resolve or its rules do not parse", () => {
    const failed = renderRuleset(sysNet(), resolved, { "10.137.0.6": "dsthost x did not resolve" });
    expect(chain(failed, "qbs-10-137-0-6")).toEqual(["# fail closed: dsthost x did not resolve", REJECT_ADMIN]);
    expect(chain(renderRuleset(sysNet(), new Map(), {}), "qbs-10-137-0-5")).toEqual([expect.stringContaining("example.com has no IPv4 address"), REJECT_ADMIN]);
    const bad = sysNet();
    bad.netvm?.links[1]?.firewall.push("action=perhaps");
    expect(chain(renderRuleset(bad, resolved, {}), "qbs-10-137-0-6")).toEqual([expect.stringContaining('action "perhaps"'), REJECT_ADMIN]);
  });

  it("gives a client whose slot is unknown no chain and no allowed address (the policy drops it)", () => {
    const config = sysNet();
    const link = config.netvm?.links[1];
    if (link) link.slotMac = "52:54:00:99:99:99";
    const out = renderRuleset(config, resolved, {});
    expect(out).not.toContain("10.137.0.6");
  });

  it("renders the fail-closed fallback with every client rejecting", () => {
    const out = renderFailClosed(sysNet(), "nft refused the ruleset");
    expect(chain(out, "qbs-10-137-0-5")).toEqual(["# fail closed: nft refused the ruleset", REJECT_ADMIN]);
    expect(chain(out, "qbs-10-137-0-6")).toEqual(["# fail closed: nft refused the ruleset", REJECT_ADMIN]);
  });

  it("has no DNAT in a netvm without an uplink (DNS goes upstream), and empty sets without clients", () => {
    const fw = renderRuleset(sysFirewall(), new Map(), {});
    expect(fw).not.toContain("dnat");
    expect(chain(fw, "qbs-10-137-0-7")).toEqual(["tcp dport 80 accept", REJECT_ADMIN, REJECT_ADMIN]);
    const app = renderRuleset(appVm(), new Map(), {});
    expect(app).not.toContain("elements");
    expect(app).not.toContain("qbs-");
    expect(chain(app, "forward")).toContain("type filter hook forward priority filter; policy drop;");
  });
});
