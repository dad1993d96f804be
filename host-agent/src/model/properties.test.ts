import { describe, expect, it } from "vitest";
import type { DomainRecord } from "./domain.js";
import { checkGlobalSet, checkPropertySet, PROPERTIES, resolveProperty, type DomainLookup, type PropValue } from "./properties.js";

const dom = (name: string, cls: DomainRecord["class"], props: Record<string, PropValue> = {}): DomainRecord => ({
  name, class: cls, props: { label: "red", ...props }, features: {}, tags: [], createdAt: "t",
});

function world(doms: DomainRecord[], globals: Record<string, PropValue> = {}): DomainLookup {
  const m = new Map(doms.map((d) => [d.name, d]));
  return { get: (n) => m.get(n), list: () => [...m.values()], globals: () => globals };
}

const tpl = dom("debian-12", "TemplateVM", { memory: 1000, kernelopts: "quiet" });
const work = dom("work", "AppVM", { template: "debian-12" });
const net = dom("sys-net", "AppVM", { template: "debian-12", provides_network: true });
const fw = dom("sys-firewall", "AppVM", { template: "debian-12", provides_network: true, netvm: "sys-net" });

describe("property fallback: own -> template -> global -> default", () => {
  const w = world([tpl, work, net], { default_qrexec_timeout: 90 });
  it("uses the domain's own value", () => {
    expect(resolveProperty(dom("x", "AppVM", { template: "debian-12", memory: 2048 }), "memory", w)).toEqual({ value: 2048, source: "own" });
  });
  it("falls back to the template", () => {
    expect(resolveProperty(work, "memory", w)).toEqual({ value: 1000, source: "template" });
    expect(resolveProperty(work, "kernelopts", w)).toEqual({ value: "quiet", source: "template" });
  });
  it("falls back to the global, then the built-in default", () => {
    expect(resolveProperty(work, "qrexec_timeout", w)).toEqual({ value: 90, source: "global" });
    expect(resolveProperty(work, "shutdown_timeout", w)).toEqual({ value: 60, source: "global" });
    expect(resolveProperty(work, "vcpus", w)).toEqual({ value: 2, source: "default" });
  });
  it("does not take autostart from the template (as in Qubes)", () => {
    const w2 = world([dom("t", "TemplateVM", { autostart: true }), dom("a", "AppVM", { template: "t" })]);
    expect(resolveProperty(w2.get("a")!, "autostart", w2)).toEqual({ value: false, source: "default" });
  });
  it("a template's own properties do not fall back to anything but globals and defaults", () => {
    expect(resolveProperty(tpl, "vcpus", w).source).toBe("default");
  });
});

describe("property validation", () => {
  const w = world([tpl, work, net, fw]);
  const bad = (name: string, value: string, why: string, self = work) =>
    expect(() => checkPropertySet(self, name, value, w)).toThrow(expect.objectContaining({ message: expect.stringContaining(why) }));

  it("parses each type", () => {
    expect(checkPropertySet(work, "memory", "800", w)).toBe(800);
    expect(checkPropertySet(work, "autostart", "yes", w)).toBe(true);
    expect(checkPropertySet(work, "label", "blue", w)).toBe("blue");
    expect(checkPropertySet(work, "kernelopts", "quiet splash", w)).toBe("quiet splash");
    expect(checkPropertySet(work, "netvm", "sys-net", w)).toBe("sys-net");
    expect(checkPropertySet(work, "netvm", "", w)).toBe("");
    expect(checkPropertySet(work, "vmm", "qemu", w)).toBe("qemu");
    expect(checkPropertySet(work, "vmm", "cloud-hypervisor", w)).toBe("cloud-hypervisor");
  });

  it("refuses an unknown property and names the known ones", () => bad("colour", "red", "unknown property"));
  it("refuses a wrong type", () => {
    bad("memory", "lots", "must be an integer");
    bad("autostart", "maybe", "true or false");
  });
  it("refuses out-of-range values", () => {
    bad("memory", "64", "between 128");
    bad("vcpus", "0", "between 1");
    bad("qrexec_timeout", "99999", "between 1");
  });
  it("refuses an unknown label", () => bad("label", "pink", "unknown label"));
  it("refuses a template that is not a TemplateVM, or does not exist", () => {
    bad("template", "sys-net", "not a TemplateVM");
    bad("template", "nope", "does not exist");
  });
  it("refuses template on classes that have none", () => bad("template", "debian-12", "cannot be set on a TemplateVM", tpl));
  it("refuses a netvm that provides no network", () => bad("netvm", "work", "does not provide network", net));
  it("refuses netvm loops", () => {
    bad("netvm", "sys-firewall", "Loops in network are unsupported", net);
    bad("netvm", "sys-net", "Loops in network are unsupported", net);
  });
  it("refuses an unknown vmm", () => bad("vmm", "xen", "qemu"));
  it("refuses control characters in text", () => bad("kernelopts", "a\nb", "printable"));
  it("checks globals too", () => {
    expect(checkGlobalSet("default_qrexec_timeout", "30")).toBe(30);
    expect(() => checkGlobalSet("default_colour", "x")).toThrow(/unknown property/);
  });
  it("documents every property", () => {
    for (const [name, def] of Object.entries(PROPERTIES)) expect(def.doc, name).toBeTruthy();
  });
});

describe("network properties (Qubes' qubes/vm/mix/net.py)", () => {
  const sysNet = { ...dom("sys-net", "AppVM", { template: "debian-12", provides_network: true, netvm: "" }), qid: 2 };
  const sysFw = { ...dom("sys-firewall", "AppVM", { template: "debian-12", provides_network: true, netvm: "sys-net" }), qid: 3 };
  const app = { ...dom("work", "AppVM", { template: "debian-12" }), qid: 300 };
  const dvmTpl = { ...dom("dvm", "AppVM", { template: "debian-12", template_for_dispvms: true, netvm: "sys-net" }), qid: 4 };
  const disp = { ...dom("disp42", "DispVM", { template: "dvm" }), qid: 5, dispid: 42 };
  const tmpl = { ...tpl, qid: 1 };
  const w = world([tmpl, sysNet, sysFw, app, dvmTpl, disp], { default_netvm: "sys-firewall" });

  it("derives ip, visible_ip and visible_gateway from qid, dispid and the netvm", () => {
    expect(resolveProperty(app, "ip", w).value).toBe("10.137.1.46");
    expect(resolveProperty(app, "visible_ip", w).value).toBe("10.137.1.46");
    expect(resolveProperty(app, "visible_gateway", w).value).toBe("10.137.0.3");
    expect(resolveProperty(disp, "ip", w).value).toBe("10.138.0.42");
    expect(resolveProperty(disp, "visible_gateway", w).value).toBe("10.137.0.2");
    expect(resolveProperty(sysNet, "visible_gateway", w).value).toBe("");
    expect(resolveProperty(app, "mac", w).value).toBe("00:16:3e:5e:6c:00");
  });
  it("uses default_netvm, but never for templates, net domains or the default itself", () => {
    expect(resolveProperty(app, "netvm", w)).toEqual({ value: "sys-firewall", source: "global" });
    expect(resolveProperty(tmpl, "netvm", w).value).toBe("");
    expect(resolveProperty(dom("sys-x", "AppVM", { template: "debian-12", provides_network: true }), "netvm", w).value).toBe("");
    expect(resolveProperty(disp, "netvm", w)).toEqual({ value: "sys-net", source: "template" });
  });
  it("keeps identity properties read-only", () => {
    for (const p of ["ip", "visible_ip", "visible_gateway", "qid", "dispid"]) {
      expect(() => checkPropertySet(app, p, "1", w), p).toThrow(/read-only/);
    }
  });
  it("refuses to stop providing network while a client uses it", () => {
    expect(() => checkPropertySet(sysFw, "provides_network", "false", w)).toThrow(/still used by other qubes.*work/);
    expect(() => checkPropertySet(sysNet, "provides_network", "false", w)).toThrow(/still used by other qubes.*sys-firewall/);
  });
  it("refuses a netvm that is the domain itself", () => {
    expect(() => checkPropertySet(sysFw, "netvm", "sys-firewall", w)).toThrow(/Loops in network are unsupported/);
  });
  it("checks uplink and mac values", () => {
    expect(checkPropertySet(sysNet, "uplink", "passt", w)).toBe("passt");
    expect(checkPropertySet(sysNet, "uplink", "tap:qvm0", w)).toBe("tap:qvm0");
    for (const v of ["tap:", "tap:a/b", "tap:waytoolongname123", "slirp"]) expect(() => checkPropertySet(sysNet, "uplink", v, w), v).toThrow(/uplink must be/);
    expect(checkPropertySet(app, "mac", "00:16:3E:00:00:01", w)).toBe("00:16:3e:00:00:01");
    expect(() => checkPropertySet(app, "mac", "01:00:00:00:00:00", w)).toThrow(/multicast/);
    expect(() => checkPropertySet(app, "mac", "zz", w)).toThrow(/not a MAC/);
  });
});
