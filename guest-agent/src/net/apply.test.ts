import { describe, expect, it } from "vitest";
import { applyNetwork } from "./apply.js";
import { FakeDomain, OWN_MAC, SLOT_MACS, appVm, sysFirewall, sysNet } from "./testing.js";

/** A netvm as the kernel named it: the slots came up first, the uplink last. */
function netvmDomain(): FakeDomain {
  return new FakeDomain([
    { name: "ens3", mac: SLOT_MACS[0] ?? "" },
    { name: "ens4", mac: SLOT_MACS[1] ?? "" },
    { name: "ens5", mac: SLOT_MACS[2] ?? "" },
    { name: "ens6", mac: OWN_MAC },
  ]);
}

const apply = (d: FakeDomain, config = sysNet()) => applyNetwork(config, d.run, { host: d, resolveTimeoutMs: 100 });
const nftInputs = (d: FakeDomain) => d.calls.filter((c) => c.command === "nft").map((c) => c.input ?? "");

describe("applyNetwork in sys-net", () => {
  it("names the links, configures the uplink, loads the ruleset, then connects the clients", async () => {
    const d = netvmDomain();
    expect(await apply(d)).toEqual({ failures: {} });
    const lines = d.lines();
    expect(lines).toEqual([
      // first apply of the boot: every client rejected before any link is touched
      "nft -f -",
      "ip link set dev ens3 down",
      "ip link set dev ens3 name vif0",
      "ip link set dev ens4 down",
      "ip link set dev ens4 name vif1",
      "ip link set dev ens5 down",
      "ip link set dev ens5 name vif2",
      "ip link set dev ens6 down",
      "ip link set dev ens6 name eth0",
      "ip -j -4 addr show dev eth0",
      "ip addr replace 192.168.122.50/24 dev eth0",
      "ip link set dev eth0 group 1 up",
      "ip route replace default via 192.168.122.1 dev eth0 onlink",
      "nft -f -",
      "ip link set dev vif1 down",
      "ip addr flush dev vif1",
      "ip route flush dev vif1",
      "ip neigh flush dev vif1 nud all",
      "ip link set dev vif0 group 2",
      "ip -j -4 addr show dev vif0",
      "ip -j -4 route show dev vif0",
      "ip -j -4 neigh show dev vif0",
      "ip addr replace 10.137.0.1/32 dev vif0",
      "ip neigh replace 10.137.0.5 dev vif0 lladdr 00:16:3e:5e:6c:00 nud permanent",
      "ip link set dev vif0 up",
      "ip route replace 10.137.0.5 dev vif0 scope link",
      "ip link set dev vif2 group 2",
      "ip -j -4 addr show dev vif2",
      "ip -j -4 route show dev vif2",
      "ip -j -4 neigh show dev vif2",
      "ip addr replace 10.137.0.1/32 dev vif2",
      "ip neigh replace 10.137.0.6 dev vif2 lladdr 00:16:3e:5e:6c:00 nud permanent",
      "ip link set dev vif2 up",
      "ip route replace 10.137.0.6 dev vif2 scope link",
      "conntrack -D -s 10.137.0.5",
      "conntrack -D -s 10.137.0.6",
    ]);
    const [interim, real] = nftInputs(d);
    expect(interim).toContain("# fail closed: the rules are being applied");
    expect(real).toContain("ip daddr 93.184.216.34 tcp dport 443 accept");
    expect(real).not.toContain("fail closed");
    expect(d.resolvConf).toBe("# written by the qvm guest agent\nnameserver 192.168.122.1\nnameserver 9.9.9.9\n");
    expect(d.sysctl.get("net.ipv4.ip_forward")).toBe("1");
    expect(Object.keys(d.state?.clients ?? {})).toEqual(["10.137.0.5", "10.137.0.6"]);
  });

  it("is idempotent: the same configuration again renames nothing, loads the same ruleset and keeps every flow", async () => {
    const d = netvmDomain();
    await apply(d);
    const first = d.lines();
    const firstRuleset = nftInputs(d)[1];
    const state = structuredClone(d.state);
    d.calls = [];
    await apply(d);
    const again = d.lines();
    expect(again).toEqual(first.filter((l, i) => !(i === 0 || l.includes(" name ") || l.includes(" ens") || l.startsWith("conntrack"))));
    expect(nftInputs(d)).toEqual([firstRuleset]);
    expect(d.state).toEqual(state);
  });

  it("forgets the flows of exactly the clients whose rules changed or that left", async () => {
    const d = netvmDomain();
    await apply(d);
    const changed = sysNet();
    const work = changed.netvm?.links[0];
    if (work) work.firewall = ["action=drop"];
    d.calls = [];
    await apply(d, changed);
    expect(d.lines().filter((l) => l.startsWith("conntrack"))).toEqual(["conntrack -D -s 10.137.0.5"]);

    const gone = sysNet();
    gone.netvm?.links.splice(1, 1);
    if (gone.netvm?.links[0]) gone.netvm.links[0].firewall = ["action=drop"];
    d.calls = [];
    await apply(d, gone);
    expect(d.lines().filter((l) => l.startsWith("conntrack"))).toEqual(["conntrack -D -s 10.137.0.6"]);
    // the slot it used is emptied
    expect(d.lines()).toContain("ip link set dev vif2 down");
  });

  it("also forgets flows when a name resolves to other addresses", async () => {
    const d = netvmDomain();
    await apply(d);
    d.dns.set("example.com", ["93.184.216.35"]);
    d.calls = [];
    await apply(d);
    expect(d.lines().filter((l) => l.startsWith("conntrack"))).toEqual(["conntrack -D -s 10.137.0.5"]);
  });

  it("stops asking conntrack when it is not installed", async () => {
    const d = netvmDomain();
    d.answers.set("conntrack", () => ({ code: 127, stderr: "conntrack: not found" }));
    await apply(d);
    expect(d.lines().filter((l) => l.startsWith("conntrack"))).toHaveLength(1);
  });

  it("fails a client closed when a host name does not resolve, and reports it", async () => {
    const d = netvmDomain();
    d.dns.clear();
    const result = await apply(d);
    expect(result.failures).toEqual({ "10.137.0.5": "dsthost example.com did not resolve: getaddrinfo ENOTFOUND example.com" });
    const real = nftInputs(d)[1] ?? "";
    expect(real).toContain("# fail closed: dsthost example.com did not resolve");
    expect(real).toMatch(/chain qbs-10-137-0-6 \{\n {4}accept\n/);
  });

  it("fails a client closed when its rules do not parse", async () => {
    const d = netvmDomain();
    const config = sysNet();
    config.netvm?.links[1]?.firewall.push("action=accept dstports=80");
    const result = await apply(d, config);
    expect(result.failures).toEqual({ "10.137.0.6": expect.stringContaining('firewall rule 2: dstports "80": only with proto=tcp or proto=udp') });
    expect(nftInputs(d)[1]).toMatch(/chain qbs-10-137-0-6 \{\n {4}# fail closed: firewall rule 2/);
  });

  it("loads a ruleset rejecting every client when nft refuses the real one", async () => {
    const d = netvmDomain();
    d.state = { clients: {} };
    let loads = 0;
    d.answers.set("nft -f -", () => (++loads === 1 ? { code: 1, stderr: "Error: syntax error\n" } : {}));
    const result = await apply(d);
    const why = "nft refused the ruleset: Error: syntax error";
    expect(result.failures).toEqual({ "10.137.0.5": why, "10.137.0.6": why });
    const [, fallback] = nftInputs(d);
    expect(fallback).toMatch(/chain qbs-10-137-0-5 \{\n {4}# fail closed: nft refused the ruleset/);
    expect(fallback).toMatch(/chain qbs-10-137-0-6 \{\n {4}# fail closed: nft refused the ruleset/);
    // the links still come up: the loaded ruleset rejects their traffic
    expect(d.lines()).toContain("ip link set dev vif0 up");
  });

  it("takes the client links down and throws when no ruleset can be loaded", async () => {
    const d = netvmDomain();
    d.state = { clients: {} };
    d.answers.set("nft", () => ({ code: 1, stderr: "Error: Could not process rule: Operation not supported" }));
    await expect(apply(d)).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringContaining("client links are down") });
    const lines = d.lines();
    expect(lines).toEqual(expect.arrayContaining(["ip link set dev vif0 down", "ip link set dev vif1 down", "ip link set dev vif2 down"]));
    expect(lines).not.toContain("ip link set dev eth0 down");
    expect(lines).not.toContain("ip link set dev vif0 up");
    expect(d.sysctl.size).toBe(0);
    expect(d.state).toEqual({ clients: {} });
  });

  it("reports a client whose slot interface is missing", async () => {
    const d = netvmDomain();
    d.links = d.links.filter((l) => l.mac !== SLOT_MACS[2]);
    const result = await apply(d);
    expect(result.failures).toEqual({ "10.137.0.6": `no network interface has the client link's MAC ${SLOT_MACS[2]}` });
    expect(d.lines().some((l) => l.includes("vif2"))).toBe(false);
  });

  it("removes addresses, routes and neighbours left from an earlier configuration", async () => {
    const d = netvmDomain();
    d.answers.set("ip -j -4 addr show dev eth0", () => ({
      stdout: JSON.stringify([{ ifname: "eth0", addr_info: [{ family: "inet", local: "192.168.122.50", prefixlen: 24 }, { family: "inet", local: "10.0.2.15", prefixlen: 24 }] }]),
    }));
    d.answers.set("ip -j -4 route show dev vif0", () => ({ stdout: JSON.stringify([{ dst: "10.137.0.5", scope: "link" }, { dst: "10.137.0.9", scope: "link" }]) }));
    d.answers.set("ip -j -4 neigh show dev vif0", () => ({ stdout: JSON.stringify([{ dst: "10.137.0.9", lladdr: "00:16:3e:5e:6c:00", state: ["PERMANENT"] }]) }));
    await apply(d);
    const lines = d.lines();
    expect(lines).toContain("ip addr del 10.0.2.15/24 dev eth0");
    expect(lines).not.toContain("ip addr del 192.168.122.50/24 dev eth0");
    expect(lines).toContain("ip route del 10.137.0.9 dev vif0");
    expect(lines).not.toContain("ip route del 10.137.0.5 dev vif0");
    expect(lines).toContain("ip neigh del 10.137.0.9 dev vif0");
  });
});

describe("applyNetwork in a client", () => {
  it("configures the link to the netvm with a /32, a permanent gateway neighbour and an onlink default route", async () => {
    const d = new FakeDomain([{ name: "eth0", mac: OWN_MAC }]);
    d.state = { clients: {} };
    expect(await applyNetwork(appVm(), d.run, { host: d })).toEqual({ failures: {} });
    expect(d.lines()).toEqual([
      "ip -j -4 addr show dev eth0",
      "ip addr replace 10.137.0.7/32 dev eth0",
      "ip link set dev eth0 group 1 up",
      "ip neigh replace 10.137.0.6 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent",
      "ip route replace 10.137.0.6 dev eth0 scope link",
      "ip route replace default via 10.137.0.6 dev eth0 onlink",
      "nft -f -",
    ]);
    expect(d.resolvConf).toBe("# written by the qvm guest agent\nnameserver 10.139.1.1\nnameserver 10.139.1.2\n");
    expect(d.sysctl.get("net.ipv4.ip_forward")).toBe("0");
  });

  it("as sys-firewall: its own link and its clients' links", async () => {
    const d = new FakeDomain([
      { name: "eth0", mac: SLOT_MACS[1] ?? "" },
      { name: "eth1", mac: OWN_MAC },
      { name: "eth2", mac: SLOT_MACS[0] ?? "" },
    ]);
    const result = await applyNetwork(sysFirewall(), d.run, { host: d });
    expect(result.failures).toEqual({});
    const lines = d.lines();
    expect(lines.slice(1, 9)).toEqual([
      "ip link set dev eth0 down",
      "ip link set dev eth0 name vif1",
      // eth0 is the wanted name of eth1, but another managed link holds it until it has moved
      "ip link set dev eth1 down",
      "ip link set dev eth1 name qvmtmp0",
      "ip link set dev eth2 down",
      "ip link set dev eth2 name vif0",
      "ip link set dev qvmtmp0 down",
      "ip link set dev qvmtmp0 name eth0",
    ]);
    expect(lines).toContain("ip route replace 10.137.0.7 dev vif1 scope link");
    expect(lines).toContain("ip addr replace 10.137.0.6/32 dev vif1");
    expect(nftInputs(d)[1]).not.toContain("dnat");
    expect(d.links.map((l) => l.name).sort()).toEqual(["eth0", "vif0", "vif1"]);
  });

  it("refuses a configuration it cannot apply safely", async () => {
    const d = new FakeDomain([{ name: "eth0", mac: OWN_MAC }]);
    const bad = appVm();
    if (bad.client) bad.client.ip = "10.137.0.7; flush ruleset";
    await expect(applyNetwork(bad, d.run, { host: d })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("client.ip") });
    await expect(applyNetwork(appVm(), d.run, { host: new FakeDomain([{ name: "eth0", mac: "52:54:00:00:00:02" }]) })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining(`no network interface has MAC ${OWN_MAC}`),
    });
    expect(d.calls).toEqual([]);
  });

  it("applies one configuration at a time", async () => {
    const d = new FakeDomain([{ name: "eth0", mac: OWN_MAC }]);
    d.state = { clients: {} };
    let inFlight = 0;
    let most = 0;
    const slow = async (...args: Parameters<typeof d.run>) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      return d.run(...args);
    };
    await Promise.all([applyNetwork(appVm(), slow, { host: d }), applyNetwork(appVm(), slow, { host: d })]);
    expect(most).toBe(1);
    expect(d.lines()).toHaveLength(14);
  });
});
