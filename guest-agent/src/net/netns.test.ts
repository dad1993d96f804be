// Integration: the rendered rulesets in a real kernel, and a netvm with a client, each in a
// network namespace this test creates (and always deletes): only traffic between those namespaces.
// Tests run as root (the test command runs as root, as qvmd does).
import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyNetwork } from "./apply.js";
import { runChecked, runCommand, type CommandRunner } from "./commands.js";
import type { GuestNetConfig } from "./config.js";
import type { AppliedState, NetHost } from "./host.js";
import { renderFailClosed, renderRuleset } from "./ruleset.js";
import { CLIENT_MAC, OWN_MAC, SLOT_MACS, appVm, sysFirewall, sysNet } from "./testing.js";

const ip = (...args: string[]) => runChecked(runCommand, "ip", args);
const inNs =
  (ns: string): CommandRunner =>
  (command, args, options) =>
    runCommand("ip", ["netns", "exec", ns, command, ...args], options);

async function addNs(name: string): Promise<void> {
  await runCommand("ip", ["netns", "del", name]);
  await ip("netns", "add", name);
}

describe("rendered rulesets in a real kernel", () => {
  const ns = `qvmtest-fw-${process.pid}`;
  const nft = (args: string[], input?: string) => runChecked(inNs(ns), "nft", args, input === undefined ? undefined : { input });
  beforeAll(() => addNs(ns));
  afterAll(() => runCommand("ip", ["netns", "del", ns]));

  const resolved = new Map([["10.137.0.5", new Map([["example.com", ["93.184.216.34", "93.184.216.35"]]])]]);
  const noDns = sysNet();
  if (noDns.netvm?.uplink) noDns.netvm.uplink.dns = [];
  const mixed = sysNet();
  mixed.netvm?.links[1]?.firewall.splice(0, 1, "action=accept dst4=10.0.0.1/8 proto=udp dstports=1-65535", "action=drop proto=tcp dstports=0", "action=accept proto=udp specialtarget=dns dst4=10.139.1.2");
  const cases: [string, string][] = [
    ["sys-net: uplink, two clients, names, dns, port ranges, icmp types, drop", renderRuleset(sysNet(), resolved, {})],
    ["sys-net: more rule shapes", renderRuleset(mixed, resolved, {})],
    ["sys-net without upstream DNS", renderRuleset(noDns, resolved, {})],
    ["sys-firewall: no uplink", renderRuleset(sysFirewall(), new Map(), {})],
    ["failures: one client failed, the other's name unresolved", renderRuleset(sysNet(), new Map(), { "10.137.0.6": "dsthost x did not resolve: }\n{" })],
    ["the fail-closed fallback", renderFailClosed(sysNet(), "nft refused the ruleset")],
    ["an AppVM", renderRuleset(appVm(), new Map(), {})],
  ];

  it.each(cases)("%s: nft -c accepts it, nft -f loads it, and loading it again replaces it", async (_name, script) => {
    await nft(["-c", "-f", "-"], script);
    await nft(["-f", "-"], script);
    await nft(["-f", "-"], script);
    const listed = await nft(["list", "ruleset"]);
    expect(listed.match(/^table ip qvm \{$/gm)).toHaveLength(1);
    expect(listed.match(/^table ip qvm-firewall \{$/gm)).toHaveLength(1);
  });

  it("loads the rules as written", async () => {
    await nft(["-f", "-"], renderRuleset(sysNet(), resolved, {}));
    const chain = await nft(["list", "chain", "ip", "qvm-firewall", "qbs-10-137-0-5"]);
    expect(chain).toContain("ip daddr { 93.184.216.34, 93.184.216.35 } tcp dport 443 accept");
    expect(chain).toContain("tcp dport 22-23 accept");
    expect(chain).toContain("icmp type echo-request reject with icmp admin-prohibited");
    expect(chain).toContain("icmp type 255 accept");
  });

  it("leaves other tables alone", async () => {
    await nft(["-f", "-"], "table inet someone-else {\n  chain c {\n  }\n}\n");
    await nft(["-f", "-"], renderRuleset(sysFirewall(), new Map(), {}));
    expect(await nft(["list", "tables"])).toContain("table inet someone-else");
  });
});

/** A domain in a namespace: its links listed there, its sysctls set there, its files in memory. */
function namespaceHost(ns: string, names: Record<string, string[]> = {}): NetHost & { resolvConf?: string } {
  let state: AppliedState | undefined;
  const host: NetHost & { resolvConf?: string } = {
    async listLinks() {
      const links = JSON.parse(await ip("-n", ns, "-j", "link", "show")) as { ifname: string; address: string }[];
      return links.filter((l) => l.ifname !== "lo").map((l) => ({ name: l.ifname, mac: l.address.toLowerCase() }));
    },
    async writeResolvConf(text) {
      host.resolvConf = text;
    },
    async setSysctl(key, value) {
      // /proc/sys/net is the reading process's namespace: this is the test namespace's, not the host's.
      await runChecked(inNs(ns), "sh", ["-c", `echo ${value} > /proc/sys/${key.replaceAll(".", "/")}`]);
    },
    async resolve(name) {
      const found = names[name];
      if (!found) throw new Error(`ENOTFOUND ${name}`);
      return found;
    },
    readState: async () => state,
    writeState: async (s) => {
      state = s;
    },
  };
  return host;
}

// The outside world: answers TCP on 8000 and 8001 and DNS-shaped UDP on 53, and says who came.
const SERVER = `
const net = require("net"), dgram = require("dgram");
let ready = 0; const up = () => { if (++ready === 3) console.log("ready"); };
for (const port of [8000, 8001]) net.createServer((s) => { console.log("tcp " + port + " " + s.remoteAddress); s.end(); }).listen(port, "0.0.0.0", up);
const u = dgram.createSocket("udp4");
u.on("message", (m, r) => { console.log("udp 53 " + r.address); u.send(m, r.port, r.address); });
u.bind(53, "0.0.0.0", up);
`;
// One connection attempt: prints ok, timeout, or the error code.
const PROBE = `
const net = require("net"), dgram = require("dgram");
const [mode, host, port, local] = process.argv.slice(1);
const done = (w) => { console.log(w); process.exit(0); };
setTimeout(() => done("timeout"), 1500);
if (mode === "tcp") {
  const s = net.connect({ host, port: Number(port), localAddress: local || undefined });
  s.on("connect", () => done("ok"));
  s.on("error", (e) => done(e.code));
} else {
  const u = dgram.createSocket("udp4");
  u.on("message", () => done("ok"));
  u.bind({ address: local || "0.0.0.0" }, () => u.send("q", Number(port), host));
}
`;

describe("a netvm with a client, in namespaces", () => {
  const id = process.pid;
  const netvm = `qvmtest-netvm-${id}`;
  const client = `qvmtest-client-${id}`;
  const other = `qvmtest-other-${id}`;
  const outside = `qvmtest-out-${id}`;
  const all = [netvm, client, other, outside];
  let server: ChildProcess | undefined;
  const seen: string[] = [];

  const netvmConfig: GuestNetConfig = {
    netvm: {
      gateway: "10.137.0.1",
      uplink: { mac: OWN_MAC, address: "192.168.122.50", prefix: 24, gateway: "192.168.122.1", dns: ["192.168.122.1"] },
      slotMacs: SLOT_MACS.slice(0, 2),
      links: [
        {
          slotMac: SLOT_MACS[0] ?? "",
          clientIp: "10.137.0.5",
          clientMac: CLIENT_MAC,
          firewall: ["action=accept specialtarget=dns", "action=accept dst4=192.168.122.1 proto=tcp dstports=8000", "action=drop proto=icmp icmptype=8", "action=drop"],
        },
        // a second client allowed everything: its address is what a spoofer would borrow
        { slotMac: SLOT_MACS[1] ?? "", clientIp: "10.137.0.6", clientMac: "00:16:3e:5e:6c:01", firewall: ["action=accept"] },
      ],
    },
  };
  const clientConfig: GuestNetConfig = {
    client: { mac: CLIENT_MAC, ip: "10.137.0.5", gateway: "10.137.0.1", gatewayMac: SLOT_MACS[0] ?? "", dns: ["10.139.1.1", "10.139.1.2"] },
  };
  const probe = async (ns: string, ...args: string[]) => (await runChecked(inNs(ns), process.execPath, ["-e", PROBE, ...args])).trim();

  beforeAll(async () => {
    for (const ns of all) await addNs(ns);
    // kernel names that are not the wanted ones: apply must rename by MAC
    await ip("-n", netvm, "link", "add", "ens3", "address", SLOT_MACS[0] ?? "", "type", "veth", "peer", "name", "ens7", "address", CLIENT_MAC, "netns", client);
    await ip("-n", netvm, "link", "add", "ens4", "address", SLOT_MACS[1] ?? "", "type", "veth", "peer", "name", "eth0", "address", "00:16:3e:5e:6c:01", "netns", other);
    await ip("-n", netvm, "link", "add", "ens5", "address", OWN_MAC, "type", "veth", "peer", "name", "up0", "netns", outside);
    await ip("-n", outside, "addr", "add", "192.168.122.1/24", "dev", "up0");
    await ip("-n", outside, "link", "set", "up0", "up");
    await ip("-n", outside, "link", "set", "lo", "up");
    // the outside can address clients, to check that nothing comes in
    await ip("-n", outside, "route", "add", "10.137.0.0/24", "via", "192.168.122.50");

    expect(await applyNetwork(netvmConfig, inNs(netvm), { host: namespaceHost(netvm) })).toEqual({ failures: {} });
    expect(await applyNetwork(clientConfig, inNs(client), { host: namespaceHost(client) })).toEqual({ failures: {} });

    server = spawn("ip", ["netns", "exec", outside, process.execPath, "-e", SERVER], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      let buffered = "";
      server?.stdout?.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) line === "ready" ? resolve() : seen.push(line);
      });
      server?.on("exit", () => reject(new Error("the test server exited")));
    });
  }, 60_000);

  afterAll(async () => {
    server?.kill();
    for (const ns of all) await runCommand("ip", ["netns", "del", ns]);
  });

  it("names the links by MAC and forwards only in the netvm", async () => {
    const names = JSON.parse(await ip("-n", netvm, "-j", "link", "show")) as { ifname: string }[];
    expect(names.map((l) => l.ifname).sort()).toEqual(["eth0", "lo", "vif0", "vif1"]);
    expect((await runChecked(inNs(netvm), "cat", ["/proc/sys/net/ipv4/ip_forward"])).trim()).toBe("1");
    expect((await runChecked(inNs(client), "cat", ["/proc/sys/net/ipv4/ip_forward"])).trim()).toBe("0");
  });

  it("lets the client reach what its rules accept, masqueraded as the netvm", async () => {
    expect(await probe(client, "tcp", "192.168.122.1", "8000")).toBe("ok");
    await new Promise((r) => setTimeout(r, 100));
    expect(seen).toContain("tcp 8000 192.168.122.50");
  });

  it("rejects what a drop rule or the final drop covers (admin-prohibited: the client is told at once)", async () => {
    expect(await probe(client, "tcp", "192.168.122.1", "8001")).toBe("EHOSTUNREACH");
    expect(seen.some((l) => l.startsWith("tcp 8001"))).toBe(false);
  });

  it("resolves through the virtual DNS server, DNAT-ed to the uplink's", async () => {
    expect(await probe(client, "udp", "10.139.1.1", "53")).toBe("ok");
    expect(seen).toContain("udp 53 192.168.122.50");
  });

  // A compromised client is root in its domain and drops its own ruleset (whose input policy and
  // masquerade would otherwise hide what the netvm does): the netvm alone must hold.
  it("with the client's own ruleset gone, drops spoofed packets and forwards nothing new into it", async () => {
    await runChecked(inNs(client), "nft", ["delete", "table", "ip", "qvm"]);
    await ip("-n", client, "addr", "add", "10.137.0.6/32", "dev", "eth0");
    try {
      // 10.137.0.6 may send anything anywhere, 10.137.0.5 may not send UDP there: borrowing the
      // other client's address would get through without anti-spoofing.
      const before = seen.length;
      expect(await probe(client, "udp", "192.168.122.1", "53", "10.137.0.6")).toBe("timeout");
      expect(seen.slice(before)).toEqual([]);
      // With nothing listening and no ruleset, the client refuses at once if anything arrives.
      expect(await probe(outside, "tcp", "10.137.0.5", "9000")).toBe("timeout");
      await ip("-n", other, "addr", "add", "10.137.0.6/32", "dev", "eth0");
      await ip("-n", other, "link", "set", "eth0", "up");
      await ip("-n", other, "neigh", "replace", "10.137.0.1", "dev", "eth0", "lladdr", SLOT_MACS[1] ?? "", "nud", "permanent");
      await ip("-n", other, "route", "add", "default", "via", "10.137.0.1", "dev", "eth0", "onlink");
      expect(await probe(other, "tcp", "10.137.0.5", "9000")).toBe("timeout");
      // the same from the netvm itself does arrive (so the timeouts above are the netvm's doing)
      expect(await probe(netvm, "tcp", "10.137.0.5", "9000")).toBe("ECONNREFUSED");
    } finally {
      await ip("-n", client, "addr", "del", "10.137.0.6/32", "dev", "eth0");
      await applyNetwork(clientConfig, inNs(client), { host: namespaceHost(client) });
    }
  });

  it("re-applying the same configuration keeps working connections working", async () => {
    expect(await applyNetwork(netvmConfig, inNs(netvm), { host: namespaceHost(netvm) })).toEqual({ failures: {} });
    expect(await probe(client, "tcp", "192.168.122.1", "8000")).toBe("ok");
  });
});
