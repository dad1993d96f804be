import { describe, expect, it } from "vitest";
import { guestNetworkConfig, type NetDomain } from "./guest-config.js";
import { passtUplink } from "./passt.js";

const d = (name: string, ip: string, extra: Partial<NetDomain> = {}): NetDomain => ({
  name, ip, mac: "00:16:3e:5e:6c:00", providesNetwork: false, uplink: "", isTemplate: false, firewall: ["action=accept"], ...extra,
});
const net = d("sys-net", "10.137.0.2", { providesNetwork: true, uplink: "passt" });
const fw = d("sys-firewall", "10.137.0.3", { providesNetwork: true });
const work = d("work", "10.137.0.5", { firewall: ["action=accept dsthost=example.test proto=tcp dstports=443-443", "action=drop"] });
const tmpl = d("debian-12", "10.137.0.1", { isTemplate: true });
const all = new Map([net, fw, work, tmpl].map((x) => [x.name, x]));
const links = [
  { client: "sys-firewall", netvm: "sys-net", slot: 0 },
  { client: "work", netvm: "sys-firewall", slot: 3 },
];
const uplinkOf = (x: NetDomain) => (x.uplink === "passt" ? passtUplink() : undefined);

describe("guestNetworkConfig", () => {
  it("gives a client a /32 with its netvm as gateway, the slot's MAC as the gateway's, and Qubes' DNS", () => {
    const c = guestNetworkConfig(work, all, links, uplinkOf);
    expect(c.client).toEqual({ mac: "00:16:3e:5e:6c:00", ip: "10.137.0.5", gateway: "10.137.0.3", gatewayMac: "fe:ff:ff:ff:00:03", dns: ["10.139.1.1", "10.139.1.2"] });
    expect(c.netvm).toBeUndefined();
    expect(c.updatesProxyClient).toBe(false);
  });
  it("gives a proxy netvm its own link upstream and its clients with their firewall", () => {
    const c = guestNetworkConfig(fw, all, links, uplinkOf);
    expect(c.client?.gateway).toBe("10.137.0.2");
    expect(c.netvm?.gateway).toBe("10.137.0.3");
    expect(c.netvm?.uplink).toBeUndefined();
    expect(c.netvm?.links).toEqual([{ slotMac: "fe:ff:ff:ff:00:03", clientIp: "10.137.0.5", clientMac: "00:16:3e:5e:6c:00", firewall: work.firewall }]);
    expect(c.netvm?.slotMacs.length).toBeGreaterThan(3);
  });
  it("gives sys-net its uplink and no client link", () => {
    const c = guestNetworkConfig(net, all, links, uplinkOf);
    expect(c.client).toBeUndefined();
    expect(c.netvm?.uplink).toEqual(passtUplink());
    expect(c.netvm?.links.map((l) => l.clientIp)).toEqual(["10.137.0.3"]);
  });
  it("leaves an unlinked domain offline; a template uses the updates proxy", () => {
    const c = guestNetworkConfig(tmpl, all, links, uplinkOf);
    expect(c.client).toBeUndefined();
    expect(c.netvm).toBeUndefined();
    expect(c.updatesProxyClient).toBe(true);
  });
});
