// Networking through service domains, with real VMs: sys-net (uplink through passt) and
// sys-firewall made by `qvm setup-network`, clients behind them, and a test internet in network
// namespaces this file makes (tests/e2e/test-internet.ts): qvmd runs in its "host" namespace, so
// passt, and everything the domains reach, stays inside the test's namespaces.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEST_NET, makeTestInternet, type TestInternet } from "./test-internet.js";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let inet: TestInternet;
let d: E2eDaemon;
let hostBefore: string;

const qvm = (args: string[], input?: string) => d.qvm(args, input);
/** A shell command in a domain (as root: tests change addresses); resolves with exit code and output. */
const sh = (dom: string, script: string) => qvm(["run", "--pass-io", "--no-pty", "-u", "root", dom, "--", "sh", "-c", script]);
const prop = async (dom: string, name: string) => (await qvm(["prefs", dom, name])).stdout.trim();
/** curl's exit code and body for a URL from inside a domain, giving up after `secs`. */
const fetchIn = (dom: string, url: string, secs = 10) => sh(dom, `curl -sS --max-time ${secs} ${url}`);
/**
 * Fetches until `done` says the result is the one expected, for up to a minute: firewall changes
 * reach the net domain asynchronously (as in Qubes), and under emulation applying takes seconds.
 */
async function fetchUntil(dom: string, url: string, done: (exitCode: number | undefined) => boolean) {
  const deadline = Date.now() + 60_000;
  let r = await fetchIn(dom, url, 5);
  while (!done(r.exitCode) && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 2000));
    r = await fetchIn(dom, url, 5);
  }
  return r;
}

/** The interfaces, addresses and routes in `ip addr` / `ip route` output, without link state. */
function addressesAndRoutes(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^\d+: |^inet |^default |^\d+\./.test(l))
    .map((l) => (/^\d+: /.test(l) ? l.split(" ")[1]! : l.replace(/ valid_lft.*/, "")));
}

beforeAll(async () => {
  inet = await makeTestInternet();
  hostBefore = await inet.hostAddrs();
  d = await withDaemon("e2e-network", { netns: inet.hostNetns });
  const setup = await qvm(["setup-network"]);
  expect(setup.exitCode, setup.stderr).toBe(0);
  // Boots one at a time: each start brings up the netvm chain first.
  await withDomain(d, "work", { label: "blue", start: true });
  await withDomain(d, "other", { label: "yellow", start: true });
  await withDomain(d, "offline", { label: "gray", properties: { netvm: "" }, start: true });
}, 420_000);

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
  await inet?.[Symbol.asyncDispose]();
});

describe("networking through sys-firewall and sys-net", () => {
  it("gives each domain Qubes' identity: a qid, a 10.137 address, its netvm as gateway", async () => {
    const ip = await prop("work", "ip");
    expect(ip).toMatch(/^10\.137\.0\.\d+$/);
    expect(await prop("work", "visible_ip")).toBe(ip);
    expect(await prop("work", "visible_gateway")).toBe(await prop("sys-firewall", "ip"));
    expect(await prop("sys-firewall", "visible_gateway")).toBe(await prop("sys-net", "ip"));
    expect(await prop("work", "netvm")).toBe("sys-firewall");
    const r = await sh("work", "ip -4 -o addr show dev eth0; ip -4 route; cat /etc/resolv.conf");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`inet ${ip}/32`);
    expect(r.stdout).toContain(`default via ${await prop("sys-firewall", "ip")}`);
    expect(r.stdout).toContain("nameserver 10.139.1.1");
  });

  it("resolves a name and loads a page through sys-firewall and sys-net, arriving from the uplink", async () => {
    const before = await inet.requests("/", TEST_NET.webIp);
    const r = await fetchIn("work", "http://example.test/");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe("qvm test internet: example.test");
    expect(await inet.requests("/", TEST_NET.webIp)).toBe(before + 1);
    // passt carries sys-net's connections over the host namespace's own sockets.
    expect(inet.requestLog().at(-1)?.from).toBe(TEST_NET.hostIp);
  });

  it("a firewall rule blocks a host and `qvm firewall list` shows why; reset opens it again", async () => {
    // As in Qubes, a domain starts with the one rule "accept"; rules added go after it, so it
    // is deleted once the new ones are in.
    for (const rule of [["specialtarget=dns", "action=accept"], ["accept", "example.test", "tcp", "80"], ["action=drop"]]) {
      const r = await qvm(["firewall", "work", "add", ...rule]);
      expect(r.exitCode, r.stderr).toBe(0);
    }
    expect((await qvm(["firewall", "work", "del", "--rule-no", "0"])).exitCode).toBe(0);
    const list = await qvm(["firewall", "work", "list"]);
    expect(list.stdout).toMatch(/ACTION\s+HOST\s+PROTOCOL/);
    expect(list.stdout).toMatch(/0\s+accept\s+-\s+-\s+-\s+dns/);
    expect(list.stdout).toMatch(/1\s+accept\s+example\.test\s+tcp\s+80/);
    expect(list.stdout).toMatch(/2\s+drop/);
    const blocked = await fetchUntil("work", "http://other.test/", (code) => code !== 0);
    expect(blocked.exitCode, d.log().slice(-4000)).not.toBe(0);
    // A drop answers ICMP admin-prohibited: curl fails at once ("No route to host"), not by timeout.
    expect(blocked.stderr).toMatch(/No route to host|Failed to connect/);
    const allowed = await fetchIn("work", "http://example.test/");
    expect(allowed.exitCode, allowed.stderr).toBe(0);
    const other = await fetchIn("other", "http://other.test/");
    expect(other.exitCode, other.stderr).toBe(0); // another client's rules are its own
    expect((await qvm(["firewall", "work", "reset"])).exitCode).toBe(0);
    const open = await fetchUntil("work", "http://other.test/", (code) => code === 0);
    expect(open.exitCode, open.stderr).toBe(0);
  });

  it("a domain with no netvm has no route and reaches nothing", async () => {
    const r = await sh("offline", "ip -4 route; ip -4 -o addr show dev eth0");
    expect(r.stdout).not.toContain("default");
    expect(r.stdout).not.toContain("inet ");
    expect((await fetchIn("offline", `http://${TEST_NET.webIp}/`, 3)).exitCode).not.toBe(0);
  });

  it("work cannot reach another client of the same netvm", async () => {
    const otherIp = await prop("other", "ip");
    const ping = await sh("work", `ping -c 2 -W 2 ${otherIp}`);
    expect(ping.exitCode).not.toBe(0);
    const tcp = await sh("work", `curl -sS --max-time 3 http://${otherIp}/`);
    expect(tcp.exitCode).not.toBe(0);
  });

  it("drops a packet sent from a forged source address", async () => {
    const before = inet.requestLog().length;
    // A compromised domain controls its own kernel: it drops its own rules (which would
    // masquerade the forged address) and sends from an address that is not its own.
    const forge = "nft delete table ip qvm; ip addr add 10.137.0.250/32 dev eth0 && curl -sS --max-time 4 --interface 10.137.0.250 http://192.0.2.80/forged";
    const r = await sh("work", `${forge}; s=$?; ip addr del 10.137.0.250/32 dev eth0; exit $s`);
    expect(r.exitCode).not.toBe(0);
    expect(inet.requestLog().slice(before).filter((q) => q.path === "/forged")).toEqual([]);
  });

  it("leaves the host with no new address, route or interface", async () => {
    expect(addressesAndRoutes(await inet.hostAddrs())).toEqual(addressesAndRoutes(hostBefore));
  });

  it("refuses a netvm loop, a netvm that provides no network, and stopping a netvm in use", async () => {
    const loop = await qvm(["prefs", "sys-net", "netvm", "sys-firewall"]);
    expect(loop.exitCode).not.toBe(0);
    expect(loop.stderr).toContain("Loops in network are unsupported");
    const noNet = await qvm(["prefs", "work", "netvm", "other"]);
    expect(noNet.stderr).toContain("The other qube does not provide network");
    const inUse = await qvm(["shutdown", "sys-firewall"]);
    expect(inUse.stderr).toContain("There are other VMs connected to this VM: ");
    const flag = await qvm(["prefs", "sys-firewall", "provides_network", "false"]);
    expect(flag.stderr).toContain("The qube is still used by other qubes");
  });
});
