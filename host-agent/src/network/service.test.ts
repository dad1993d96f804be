// NetworkService against real link files in a temporary directory and a real registry, with the
// VMs faked: "starting" a domain makes the sockets its VMM would bind and runs the attacher, as
// the runner does; every agent records the configurations it is sent.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { agentV1 } from "@qvm/protocol";
import { EventBus } from "../base/events.js";
import type { Disposable } from "../base/disposables.js";
import { DomainPaths } from "../domain/paths.js";
import { DomainRegistry } from "../domain/registry.js";
import { DomainStore } from "../store/domain-store.js";
import type { PowerStateWord } from "@qvm/protocol/contracts";
import { NET_SLOTS, slotMac, slotNic } from "./addresses.js";
import { LinkFiles, netDirOf, nicEnds } from "./link-files.js";
import { NetworkService } from "./service.js";

let dir: string;
let registry: DomainRegistry;
let events: EventBus;
let paths: DomainPaths;
let net: NetworkService;
let logs: string[];
const files = new LinkFiles();
const state = new Map<string, PowerStateWord>();
const sent = new Map<string, agentV1.SetNetworkRequest[]>();
const held = new Map<string, Disposable>();

const runner = {
  runningNames: () => [...state.keys()],
  state: (n: string): PowerStateWord => state.get(n) ?? "Halted",
  running: (n: string) =>
    ({
      agent: {
        setNetwork: async (c: agentV1.SetNetworkRequest) => {
          sent.set(n, [...(sent.get(n) ?? []), c]);
          return { failures: {} };
        },
      },
    }) as never,
};

/** What a start does: the VMM binds its sockets, the runner adopts it and runs the attacher. */
async function start(name: string, reattached = false): Promise<void> {
  const rt = paths.runtimeDirOf(name);
  files.prepare(rt);
  writeFileSync(nicEnds(rt, "eth0").local, "");
  if (registry.resolve(registry.get(name), "provides_network") === true) {
    for (let s = 0; s < NET_SLOTS; s++) writeFileSync(nicEnds(rt, slotNic(s)).local, "");
  }
  held.set(name, await net.attacher().attach({ name, info: {} as never, reattached }));
  state.set(name, "Running");
  await net.settled();
}

/** What a VM's end does: its runtime directory goes, then its attachments are released. */
async function stop(name: string): Promise<void> {
  rmSync(paths.runtimeDirOf(name), { recursive: true, force: true });
  state.delete(name);
  sent.delete(name);
  await held.get(name)!.dispose();
  await net.settled();
}

const last = (n: string) => sent.get(n)?.at(-1);
const ip = (n: string) => registry.getProperty(n, "ip").value;

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-net-"));
  mkdirSync(path.join(dir, "data"));
  events = new EventBus();
  registry = new DomainRegistry(DomainStore.open(path.join(dir, "data")), events, (n) => state.has(n));
  paths = new DomainPaths(path.join(dir, "data"), path.join(dir, "run"));
  logs = [];
  state.clear();
  sent.clear();
  net = new NetworkService({ registry, runner, paths, files, events, log: (m) => logs.push(m) });
  net.listen();
  registry.add(registry.prepareCreate({ name: "tmpl", klass: "TemplateVM", label: "black" }));
  const app = (name: string, props: Record<string, string>) => registry.add(registry.prepareCreate({ name, label: "red", template: "tmpl", properties: props }));
  app("sys-net", { provides_network: "true", netvm: "", uplink: "passt" });
  app("sys-firewall", { provides_network: "true", netvm: "sys-net" });
  app("work", { netvm: "sys-firewall" });
  app("other", { netvm: "sys-firewall" });
  await start("sys-net");
  await start("sys-firewall");
  await start("work");
});

afterEach(() => {
  net.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("NetworkService", () => {
  it("links each client to its netvm and tells both sides", () => {
    expect(files.slotOf(paths.runtimeDirOf("sys-firewall"), paths.runtimeDirOf("sys-net"))).toBe(0);
    expect(files.slotOf(paths.runtimeDirOf("work"), paths.runtimeDirOf("sys-firewall"))).toBe(0);
    expect(last("work")?.client).toMatchObject({ ip: ip("work"), gateway: ip("sys-firewall"), gatewayMac: slotMac(0) });
    expect(last("sys-firewall")?.netvm?.links).toEqual([{ slotMac: slotMac(0), clientIp: ip("work"), clientMac: "00:16:3e:5e:6c:00", firewall: ["action=accept"] }]);
    expect(last("sys-net")?.netvm?.uplink?.address).toBe("10.0.2.15");
    expect(last("sys-net")?.client).toBeUndefined();
  });

  it("moves a running client when its netvm changes, freeing its old slot", async () => {
    registry.setProperty("work", "netvm", "sys-net");
    await net.settled();
    expect(files.slotOf(paths.runtimeDirOf("work"), paths.runtimeDirOf("sys-net"))).toBe(1);
    expect(files.usedSlots(paths.runtimeDirOf("sys-firewall")).size).toBe(0);
    expect(last("work")?.client?.gateway).toBe(ip("sys-net"));
    expect(last("sys-firewall")?.netvm?.links).toEqual([]);
  });

  it("defers the move of a paused client to its unpause, as Qubes does", async () => {
    state.set("work", "Paused");
    const before = sent.get("work")!.length;
    registry.setProperty("work", "netvm", "sys-net");
    await net.settled();
    expect(files.slotOf(paths.runtimeDirOf("work"), paths.runtimeDirOf("sys-firewall"))).toBe(0);
    expect(sent.get("work")!.length).toBe(before);
    state.set("work", "Running");
    events.publish("domain-unpaused", "work");
    await net.settled();
    expect(files.slotOf(paths.runtimeDirOf("work"), paths.runtimeDirOf("sys-net"))).toBe(1);
    expect(last("work")?.client?.gateway).toBe(ip("sys-net"));
  });

  it("cuts a stopped client's link and re-links clients when their netvm comes back", async () => {
    await start("other");
    expect(files.slotOf(paths.runtimeDirOf("other"), paths.runtimeDirOf("sys-firewall"))).toBe(1);
    await stop("work");
    expect(files.usedSlots(paths.runtimeDirOf("sys-firewall"))).toEqual(new Map([[1, files.clientSocketInode(paths.runtimeDirOf("other"))!]]));
    expect(last("sys-firewall")?.netvm?.links.map((l) => l.clientIp)).toEqual([ip("other")]);

    await stop("sys-firewall");
    expect(files.usedSlots(paths.runtimeDirOf("sys-net")).size).toBe(0);
    await start("sys-firewall");
    // other gets the lowest free slot of the new sys-firewall and is told its gateway's new MAC.
    expect(files.slotOf(paths.runtimeDirOf("other"), paths.runtimeDirOf("sys-firewall"))).toBe(0);
    expect(last("other")?.client?.gatewayMac).toBe(slotMac(0));
  });

  it("sends a net domain its clients' firewall when it changes, and only then", async () => {
    const n = sent.get("sys-firewall")!.length;
    registry.setFirewall("work", [{ action: "accept", specialtarget: "dns" }, { action: "drop" }]);
    await net.settled();
    expect(last("sys-firewall")?.netvm?.links[0]?.firewall).toEqual(["action=accept specialtarget=dns", "action=drop"]);
    expect(sent.get("sys-firewall")!.length).toBe(n + 1);
    registry.setProperty("work", "memory", "500"); // not a network property: nothing is sent
    await net.reconcile("test");
    expect(sent.get("sys-firewall")!.length).toBe(n + 1);
    registry.reloadFirewall("work"); // a reload re-sends (the net domain resolves names again)
    await net.settled();
    expect(sent.get("sys-firewall")!.length).toBe(n + 2);
  });

  it("leaves links alone while domains are taken back after a qvmd restart, then checks them once", async () => {
    const fresh = new NetworkService({ registry, runner, paths, files, events, log: (m) => logs.push(m) });
    sent.clear();
    const inode = files.clientSocketInode(paths.runtimeDirOf("work"));
    await fresh.attacher().attach({ name: "work", info: {} as never, reattached: true });
    await fresh.settled();
    expect(sent.size).toBe(0);
    await fresh.afterReattach();
    expect(files.usedSlots(paths.runtimeDirOf("sys-firewall")).get(0)).toBe(inode);
    expect(last("work")?.client?.gateway).toBe(ip("sys-firewall"));
    fresh.close();
  });

  it("a domain with no netvm is told it is offline, and a template uses the updates proxy", async () => {
    registry.add(registry.prepareCreate({ name: "offline", label: "gray", template: "tmpl", properties: { netvm: "" } }));
    await start("offline");
    expect(last("offline")).toMatchObject({ client: undefined, netvm: undefined, updatesProxyClient: false });
    await start("tmpl");
    expect(last("tmpl")).toMatchObject({ client: undefined, updatesProxyClient: true });
    expect(netDirOf(paths.runtimeDirOf("tmpl"))).toContain("tmpl");
  });
});
