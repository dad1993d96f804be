// `uplink tap:NAME`: the addressing features and their refusals, what the link planner gives
// sys-net (a tap nic, no passt), and what the network service tells it (and tells again when a
// feature changes), with a real registry and link files in a temporary directory.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { agentV1 } from "@qvm/protocol";
import { EventBus } from "../base/events.js";
import { DomainPaths } from "../domain/paths.js";
import { DomainRegistry } from "../domain/registry.js";
import { DomainStore } from "../store/domain-store.js";
import { NET_SLOTS, UPLINK_MAC, UPLINK_NIC, slotNic } from "./addresses.js";
import { LinkFiles, nicEnds } from "./link-files.js";
import { NetLinkPlanner } from "./link-planner.js";
import { NetworkService } from "./service.js";
import { TAP_UPLINK_FEATURES, tapDeviceOf, tapUplink } from "./tap-uplink.js";

const good = { "net.uplink-address": "198.51.100.2/24", "net.uplink-gateway": "198.51.100.1", "net.uplink-dns": "198.51.100.1  192.0.2.53 " };

describe("tap uplink features", () => {
  it("reads the address, gateway and resolvers", () => {
    expect(tapUplink("sys-net", good)).toEqual({ mac: UPLINK_MAC, address: "198.51.100.2", prefix: 24, gateway: "198.51.100.1", dns: ["198.51.100.1", "192.0.2.53"] });
    expect(tapUplink("sys-net", { ...good, "net.uplink-address": "203.0.113.9/32", "net.uplink-gateway": "203.0.113.1" }).prefix).toBe(32);
    expect(tapDeviceOf("tap:qvm-uplink")).toBe("qvm-uplink");
    expect(tapDeviceOf("passt")).toBeUndefined();
  });

  it("refuses a missing or bad one, naming the feature and an example command", () => {
    const cases: [Record<string, string>, string, RegExp][] = [
      [{}, TAP_UPLINK_FEATURES.address, /is not set/],
      [{ ...good, "net.uplink-address": "198.51.100.2" }, TAP_UPLINK_FEATURES.address, /not an IPv4 address with a prefix length/],
      [{ ...good, "net.uplink-address": "198.51.100.300/24" }, TAP_UPLINK_FEATURES.address, /not an IPv4 address/],
      [{ ...good, "net.uplink-address": "198.51.100.2/33" }, TAP_UPLINK_FEATURES.address, /prefix length 1-32/],
      [{ ...good, "net.uplink-address": "198.51.100.0/24" }, TAP_UPLINK_FEATURES.address, /network's own address or its broadcast/],
      [{ ...good, "net.uplink-address": "198.51.100.255/24" }, TAP_UPLINK_FEATURES.address, /broadcast/],
      [{ ...good, "net.uplink-gateway": "" }, TAP_UPLINK_FEATURES.gateway, /is not set/],
      [{ ...good, "net.uplink-gateway": "gw" }, TAP_UPLINK_FEATURES.gateway, /not an IPv4 address/],
      [{ ...good, "net.uplink-gateway": "198.51.100.2" }, TAP_UPLINK_FEATURES.gateway, /sys-net's own address/],
      [{ ...good, "net.uplink-gateway": "198.51.101.1" }, TAP_UPLINK_FEATURES.gateway, /not in 198\.51\.100\.2\/24's network/],
      [{ ...good, "net.uplink-dns": "  " }, TAP_UPLINK_FEATURES.dns, /is not set/],
      [{ ...good, "net.uplink-dns": "1.1.1.1,8.8.8.8" }, TAP_UPLINK_FEATURES.dns, /IPv4 addresses separated by spaces/],
      [{ ...good, "net.uplink-dns": Array(9).fill("1.1.1.1").join(" ") }, TAP_UPLINK_FEATURES.dns, /1-8 IPv4 addresses/],
    ];
    for (const [features, feature, why] of cases) {
      let err: unknown;
      try {
        tapUplink("sys-net", features);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(features)).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(why) });
      expect((err as Error).message).toContain(`sys-net's uplink is a tap device, whose addressing comes from its features: ${feature} `);
      expect((err as Error).message).toContain(`e.g. \`qvm features sys-net ${feature} `);
    }
    expect(() => tapUplink("sys-net", {})).toThrow("`qvm features sys-net net.uplink-address 192.168.1.50/24`");
  });
});

let dir: string;
let registry: DomainRegistry;
let paths: DomainPaths;
const files = new LinkFiles();

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-tapup-"));
  mkdirSync(path.join(dir, "data"));
  registry = new DomainRegistry(DomainStore.open(path.join(dir, "data")), new EventBus(), () => false);
  paths = new DomainPaths(path.join(dir, "data"), path.join(dir, "run"));
  registry.add(registry.prepareCreate({ name: "tmpl", klass: "TemplateVM", label: "black" }));
  registry.add(registry.prepareCreate({ name: "sys-net", label: "red", template: "tmpl", properties: { provides_network: "true", netvm: "", uplink: "tap:qvmtap0" } }));
  for (const [k, v] of Object.entries(good)) registry.setFeature("sys-net", k, v);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("the link planner with a tap uplink", () => {
  const plan = () => new NetLinkPlanner({ registry, paths, files }).plan(registry.get("sys-net"), paths.runtimeDirOf("sys-net"), undefined);

  it("gives sys-net its own link, its client slots and a tap nic with the uplink MAC, and starts no passt", async () => {
    const p = plan();
    expect(p.nics.map((n) => n.id)).toEqual(["eth0", ...Array.from({ length: NET_SLOTS }, (_, s) => slotNic(s)), UPLINK_NIC]);
    expect(p.nics.at(-1)).toEqual({ id: UPLINK_NIC, mac: UPLINK_MAC, backend: { kind: "tap", ifname: "qvmtap0" } });
    const undo = await p.beforeVmm();
    undo();
  });

  it("refuses the start when the addressing features are missing or bad", () => {
    registry.removeFeature("sys-net", "net.uplink-gateway");
    expect(plan).toThrow(/net\.uplink-gateway is not set; e\.g\. `qvm features sys-net net\.uplink-gateway 192\.168\.1\.1`/);
    registry.setFeature("sys-net", "net.uplink-gateway", "198.51.100.1");
    registry.setFeature("sys-net", "net.uplink-dns", "dns.example");
    expect(plan).toThrow(/net\.uplink-dns "dns\.example" is not/);
  });

  it("still gives passt a stream link", () => {
    registry.setProperty("sys-net", "uplink", "passt");
    expect(plan().nics.at(-1)).toMatchObject({ id: UPLINK_NIC, mac: UPLINK_MAC, backend: { kind: "stream-unix" } });
  });
});

describe("the network service with a tap uplink", () => {
  it("tells sys-net its addressing from the features, and again when one changes; a bad one is logged and not sent", async () => {
    const events = new EventBus();
    registry = new DomainRegistry(DomainStore.open(path.join(dir, "data")), events, () => true);
    const sent: agentV1.SetNetworkRequest[] = [];
    const logs: string[] = [];
    const runner = {
      runningNames: () => ["sys-net"],
      state: () => "Running" as const,
      running: () => ({ agent: { setNetwork: async (c: agentV1.SetNetworkRequest) => (sent.push(c), { failures: {} }) } }) as never,
    };
    const net = new NetworkService({ registry, runner, paths, files, events, log: (m) => logs.push(m) });
    net.listen();
    try {
      const rt = paths.runtimeDirOf("sys-net");
      files.prepare(rt);
      writeFileSync(nicEnds(rt, "eth0").local, "");
      for (let s = 0; s < NET_SLOTS; s++) writeFileSync(nicEnds(rt, slotNic(s)).local, "");
      await net.attacher().attach({ name: "sys-net", info: {} as never, reattached: false });
      await net.settled();
      expect(sent.at(-1)?.netvm?.uplink).toEqual({ mac: UPLINK_MAC, address: "198.51.100.2", prefix: 24, gateway: "198.51.100.1", dns: ["198.51.100.1", "192.0.2.53"] });

      registry.setFeature("sys-net", "net.uplink-address", "198.51.100.7/24");
      await net.settled();
      expect(sent.at(-1)?.netvm?.uplink?.address).toBe("198.51.100.7");

      const before = sent.length;
      registry.setFeature("sys-net", "net.uplink-gateway", "nowhere");
      await net.settled();
      expect(sent.length).toBe(before);
      expect(logs.at(-1)).toContain("net.uplink-gateway \"nowhere\" is not an IPv4 address");
    } finally {
      net.close();
    }
  });
});
