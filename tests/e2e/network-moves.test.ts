// Links that move and come back, with real VMs: a client's netvm changed while it runs, sys-net
// killed and started again, a qvmd restart under running links, and a template updating through
// the updates proxy in sys-net (qubes.UpdatesProxy over qrexec, under policy), and sys-net's
// uplink moved to a tap device and back. The test internet is the test's own pair of network
// namespaces (tests/e2e/test-internet.ts).
import { writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEST_APT_SOURCE, makeTestInternet, type TestInternet } from "./test-internet.js";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let inet: TestInternet;
let d: E2eDaemon;

const qvm = (args: string[], input?: string) => d.qvm(args, input);
const sh = (dom: string, script: string) => qvm(["run", "--pass-io", "--no-pty", "-u", "root", dom, "--", "sh", "-c", script]);
const prop = async (dom: string, name: string) => (await qvm(["prefs", dom, name])).stdout.trim();
/** Loads the test page from a domain, retrying while links settle; resolves with the last result. */
async function fetchPage(dom: string, tries = 10) {
  let r = await sh(dom, "curl -sS --max-time 5 http://example.test/");
  for (let i = 1; i < tries && r.exitCode !== 0; i++) r = await sh(dom, "curl -sS --max-time 5 http://example.test/");
  return r;
}

beforeAll(async () => {
  inet = await makeTestInternet();
  d = await withDaemon("e2e-network-moves", { netns: inet.hostNetns });
  expect((await qvm(["setup-network"])).exitCode).toBe(0);
  await withDomain(d, "work", { label: "blue", start: true });
}, 300_000);

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
  await inet?.[Symbol.asyncDispose]();
});

describe("links that move and come back", () => {
  it("moves a running client to another netvm, and refuses a halted one", async () => {
    expect((await fetchPage("work")).exitCode).toBe(0);
    const r = await qvm(["prefs", "work", "netvm", "sys-net"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await prop("work", "visible_gateway")).toBe(await prop("sys-net", "ip"));
    const page = await fetchPage("work");
    expect(page.exitCode, page.stderr).toBe(0);
    const route = await sh("work", "ip -4 route");
    expect(route.stdout).toContain(`default via ${await prop("sys-net", "ip")}`);

    const halted = await qvm(["create", "--label", "red", "--prop", "provides_network=true", "--prop", "netvm=", "sys-spare"]);
    expect(halted.exitCode, halted.stderr).toBe(0);
    const refused = await qvm(["prefs", "work", "netvm", "sys-spare"]);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain("Cannot dynamically attach to stopped qube sys-spare");
    expect(await prop("work", "netvm")).toBe("sys-net");

    expect((await qvm(["prefs", "-D", "work", "netvm"])).exitCode).toBe(0);
    expect(await prop("work", "netvm")).toBe("sys-firewall");
    expect((await fetchPage("work")).exitCode).toBe(0);
  });

  it("killing sys-net and starting it again restores its clients' traffic", async () => {
    expect((await qvm(["kill", "sys-net"])).exitCode).toBe(0);
    expect((await sh("work", "curl -sS --max-time 3 http://example.test/")).exitCode).not.toBe(0);
    const start = await qvm(["start", "sys-net"]);
    expect(start.exitCode, start.stderr).toBe(0);
    const page = await fetchPage("work");
    expect(page.exitCode, page.stderr).toBe(0);
    expect(page.stdout).toBe("qvm test internet: example.test");
  });

  it("a qvmd restart leaves the links working and the addresses as they were", async () => {
    const ip = await prop("work", "ip");
    await d.restart();
    expect(await prop("work", "ip")).toBe(ip);
    const page = await fetchPage("work");
    expect(page.exitCode, `${page.stderr}\n${d.log().slice(-4000)}`).toBe(0);
  });

  it("a template updates through the updates proxy in sys-net, and not when the policy denies it", async () => {
    expect(await prop("debian-12", "netvm")).toBe("");
    const list = "/etc/apt/sources.list.d/qvm-test.list";
    const update = `echo '${TEST_APT_SOURCE}' > ${list} && apt-get -o Dir::Etc::SourceList=${list} -o Dir::Etc::SourceParts=/dev/null -o Acquire::Retries=0 update`;
    const ok = await sh("debian-12", update);
    expect(ok.exitCode, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/repo\.test/);
    expect(await inet.requests("/debian/Release")).toBeGreaterThan(0);

    writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), "qubes.UpdatesProxy * @anyvm @anyvm deny notify=no\n");
    const before = await inet.requests("/debian/Release");
    const denied = await sh("debian-12", `rm -rf /var/lib/apt/lists/*; ${update}`);
    // apt reports an unreachable source as a warning ("Failed to fetch") and may still exit 0.
    expect(denied.stdout + denied.stderr).toMatch(/Err:|Failed to fetch/);
    expect(await inet.requests("/debian/Release")).toBe(before);
    writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), "");
    expect((await qvm(["shutdown", "--wait", "debian-12"])).exitCode).toBe(0);
  });

  // Last: it restarts sys-net twice. The tap lives in qvmd's (the test's host) namespace, which
  // routes and masquerades 198.51.100.0/24 (TEST-NET-2) toward the test internet.
  it("sys-net's uplink on a tap device: refused without addressing or device, then pages load through the tap, and back to passt", async () => {
    const tap = "qvmtap0";
    const inHost = (argv: string[], input?: string) => execa(inet.inHost(argv)[0], inet.inHost(argv).slice(1), { input, reject: false });
    const tapPackets = async () => {
      const [link] = JSON.parse((await execa("ip", ["-n", inet.hostNetns, "-s", "-j", "link", "show", tap])).stdout) as { stats64: { rx: { packets: number } } }[];
      return link!.stats64.rx.packets;
    };
    const nat = 'table ip qvm_tap_test {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr 198.51.100.0/24 oifname "veth-host" masquerade\n }\n}\n';
    try {
      for (const argv of [["ip", "tuntap", "add", "dev", tap, "mode", "tap"], ["ip", "addr", "add", "198.51.100.1/24", "dev", tap], ["ip", "link", "set", tap, "up"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"]]) {
        const r = await inHost(argv);
        expect(r.exitCode, `${argv.join(" ")}: ${r.stderr}`).toBe(0);
      }
      const nft = await inHost(["nft", "-f", "-"], nat);
      expect(nft.exitCode, nft.stderr).toBe(0);

      expect((await qvm(["kill", "sys-net"])).exitCode).toBe(0);
      expect((await qvm(["prefs", "sys-net", "uplink", `tap:${tap}`])).exitCode).toBe(0);
      const unaddressed = await qvm(["start", "sys-net"]);
      expect(unaddressed.exitCode).not.toBe(0);
      expect(unaddressed.stderr).toContain("net.uplink-address is not set; e.g. `qvm features sys-net net.uplink-address 192.168.1.50/24`");
      for (const [f, v] of [["net.uplink-address", "198.51.100.2/24"], ["net.uplink-gateway", "198.51.100.1"], ["net.uplink-dns", inet.dnsIp]]) {
        expect((await qvm(["features", "sys-net", f!, v!])).exitCode).toBe(0);
      }
      expect((await qvm(["prefs", "sys-net", "uplink", "tap:qvmgone0"])).exitCode).toBe(0);
      const noDevice = await qvm(["start", "sys-net"]);
      expect(noDevice.exitCode).not.toBe(0);
      expect(noDevice.stderr).toContain("cannot use tap device qvmgone0: no network device qvmgone0");
      expect(noDevice.stderr).toContain("`ip tuntap add dev qvmgone0 mode tap`");

      expect((await qvm(["prefs", "sys-net", "uplink", `tap:${tap}`])).exitCode).toBe(0);
      const start = await qvm(["start", "sys-net"]);
      expect(start.exitCode, start.stderr).toBe(0);
      const before = await tapPackets();
      const page = await fetchPage("work");
      expect(page.exitCode, `${page.stderr}\n${d.log().slice(-4000)}`).toBe(0);
      expect(page.stdout).toBe("qvm test internet: example.test");
      expect(await tapPackets()).toBeGreaterThan(before);
      expect((await sh("sys-net", "ip -4 -o addr show dev eth0")).stdout).toContain("198.51.100.2/24");
    } finally {
      await qvm(["kill", "sys-net"]);
      await qvm(["prefs", "sys-net", "uplink", "passt"]);
      await inHost(["ip", "link", "del", tap]);
      await inHost(["nft", "delete", "table", "ip", "qvm_tap_test"]);
    }
    const start = await qvm(["start", "sys-net"]);
    expect(start.exitCode, start.stderr).toBe(0);
    const page = await fetchPage("work");
    expect(page.exitCode, page.stderr).toBe(0);
    expect((await execa("ip", ["-n", inet.hostNetns, "link", "show", tap], { reject: false })).exitCode).not.toBe(0);
  });
});
