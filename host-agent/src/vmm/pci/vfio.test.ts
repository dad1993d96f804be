// Binding devices to vfio-pci for a domain's VMM and giving them back, against a fake sysfs and
// its fake kernel (no IOMMU on these machines): the exact writes, the record that survives a
// qvmd crash, the group node's owner, the jail's view, and every failure path leaving the host
// as it was.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeSysfs, LAPTOP_PCI } from "../../testing/fake-sysfs.js";
import { bindToVfio, checkMemlock, makeVfioStandIns, releaseVfio, vfioJailBinds, vfioMemlockBytes, vfioRecordOf, vfioStandIn, withMemlock } from "./vfio.js";

const USER = { uid: 900000007, gid: 900000007 };
let fake: FakeSysfs;
let run: string;
let logs: string[];
const log = (m: string) => logs.push(m);
const record = () => vfioRecordOf(path.join(run, "domains/sys-net"), "sys-net");

beforeEach(() => {
  fake = new FakeSysfs();
  run = mkdtempSync(path.join(os.tmpdir(), "qvm-vfio-run-"));
  logs = [];
});
afterEach(() => {
  fake.remove();
  rmSync(run, { recursive: true, force: true });
});

describe("binding to vfio-pci", () => {
  it("overrides, unbinds and probes, records it first, and gives the VMM's uid the group", async () => {
    const host = fake.host();
    const bindings = await bindToVfio(host, "sys-net", ["0000:02:00.0"], USER, record(), log);
    expect(bindings).toEqual([{ bdf: "0000:02:00.0", group: 8, previousDriver: "iwlwifi", previousOverride: "" }]);
    expect(fake.writes).toEqual([
      ["sys/bus/pci/devices/0000:02:00.0/driver_override", "vfio-pci"],
      ["sys/bus/pci/devices/0000:02:00.0/driver/unbind", "0000:02:00.0"],
      ["sys/bus/pci/drivers_probe", "0000:02:00.0"],
    ]);
    expect(fake.driverOf("0000:02:00.0")).toBe("vfio-pci");
    expect(statSync(host.groupNode(8))).toMatchObject({ uid: USER.uid, gid: USER.gid });
    expect(record()).toBe(path.join(run, "vfio/sys-net.json"));
    expect(JSON.parse(readFileSync(record(), "utf8"))).toEqual({ bindings });
    expect(logs).toEqual(["sys-net: 0000:02:00.0 unbound from iwlwifi and bound to vfio-pci"]);
  });

  it("gives each device back to its host driver at stop, the node back to root, and forgets the record", async () => {
    const host = fake.host();
    await bindToVfio(host, "sys-net", ["0000:02:00.0"], USER, record(), log);
    fake.writes.length = 0;
    await releaseVfio(host, "sys-net", record(), log);
    expect(fake.writes).toEqual([
      ["sys/bus/pci/devices/0000:02:00.0/driver_override", "\n"],
      ["sys/bus/pci/devices/0000:02:00.0/driver/unbind", "0000:02:00.0"],
      ["sys/bus/pci/drivers_probe", "0000:02:00.0"],
    ]);
    expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
    expect(fake.overrideOf("0000:02:00.0")).toBe("(null)");
    expect(existsSync(host.groupNode(8))).toBe(false);
    expect(existsSync(record())).toBe(false);
    expect(logs.at(-1)).toBe("sys-net: 0000:02:00.0 given back to the host (driver iwlwifi)");
    // Twice is harmless (the exit path and a later start may both try).
    await releaseVfio(host, "sys-net", record(), log);
    expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
  });

  it("binds a whole group, a device without a driver without unbinding it, and chowns the node once", async () => {
    const host = fake.host();
    const bindings = await bindToVfio(host, "sys-usb", ["0000:00:14.0", "0000:00:14.2"], USER, record(), log);
    expect(bindings.map((b) => [b.bdf, b.previousDriver])).toEqual([
      ["0000:00:14.0", "xhci_hcd"],
      ["0000:00:14.2", ""],
    ]);
    expect(fake.writes.filter(([p]) => p.includes("14.2") || p.endsWith("drivers_probe"))).toEqual([
      ["sys/bus/pci/drivers_probe", "0000:00:14.0"],
      ["sys/bus/pci/devices/0000:00:14.2/driver_override", "vfio-pci"],
      ["sys/bus/pci/drivers_probe", "0000:00:14.2"],
    ]);
    expect(vfioJailBinds(host, bindings)).toEqual([
      { path: path.join(fake.root, "dev/vfio/vfio"), mode: "dev" },
      { path: path.join(fake.root, "dev/vfio/3"), mode: "dev" },
    ]);
    await releaseVfio(host, "sys-usb", record(), log);
    expect([fake.driverOf("0000:00:14.0"), fake.driverOf("0000:00:14.2")]).toEqual(["xhci_hcd", ""]);
  });

  it("leaves a device the administrator bound to vfio-pci where it was", async () => {
    fake.bind("0000:02:00.0", "vfio-pci");
    const host = fake.host();
    await bindToVfio(host, "sys-net", ["0000:02:00.0"], USER, record(), log);
    await releaseVfio(host, "sys-net", record(), log);
    expect(fake.writes).toEqual([]);
    expect(fake.driverOf("0000:02:00.0")).toBe("vfio-pci");
    expect(statSync(host.groupNode(8)).uid).toBe(0);
  });

  it("leaves alone a device someone else moved off vfio-pci meanwhile", async () => {
    const host = fake.host();
    await bindToVfio(host, "sys-net", ["0000:02:00.0"], USER, record(), log);
    fake.bind("0000:02:00.0", "iwlwifi");
    fake.writes.length = 0;
    await releaseVfio(host, "sys-net", record(), log);
    expect(fake.writes).toEqual([]);
  });

  it("undoes everything when a later device fails, and says which and why", async () => {
    const host = fake.host();
    await expect(bindToVfio(host, "sys-net", ["0000:02:00.0", "0000:07:00.0"], USER, record(), log)).rejects.toThrow(
      expect.objectContaining({ code: "NOT_FOUND", message: "sys-net: this host has no PCI device 0000:07:00.0; see `qvm pci ls`" }),
    );
    expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
    expect(existsSync(record())).toBe(false);
  });

  it("refuses a group another domain's VMM holds, before touching anything", async () => {
    fake.bind("0000:02:00.0", "vfio-pci");
    fake.host().chown(fake.host().groupNode(8), 900000001, 900000001);
    await expect(bindToVfio(fake.host(), "sys-net", ["0000:02:00.0"], USER, record(), log)).rejects.toThrow(/held by another domain's VMM \(uid 900000001\)/);
    expect(statSync(fake.host().groupNode(8)).uid).toBe(900000001);
    expect(fake.writes).toEqual([]);
  });

  it("says to load vfio-pci when the driver is missing, and names a device the kernel would not give it", async () => {
    const without = new FakeSysfs(LAPTOP_PCI, { vfioLoaded: false });
    try {
      await expect(bindToVfio(without.host(), "sys-net", ["0000:02:00.0"], USER, record(), log)).rejects.toThrow(expect.objectContaining({ code: "MISSING_DEPENDENCY", message: expect.stringContaining("modprobe vfio-pci") }));
    } finally {
      without.remove();
    }
    // A kernel that ignores the override (an old one, or a driver that grabs it back).
    const host = fake.host();
    const stubborn = new (host.constructor as typeof import("./sysfs.js").PciHost)({ root: fake.root, write: () => {} });
    await expect(bindToVfio(stubborn, "sys-net", ["0000:02:00.0"], USER, record(), log)).rejects.toThrow("sys-net: 0000:02:00.0 did not bind to vfio-pci (its driver is iwlwifi); see the kernel log (dmesg)");
  });

  it("releases what a crashed qvmd recorded, and ignores a damaged record", async () => {
    const host = fake.host();
    await bindToVfio(host, "sys-net", ["0000:02:00.0"], USER, record(), log);
    // A new qvmd: only the record tells what was bound.
    await releaseVfio(fake.host(), "sys-net", record(), log);
    expect(fake.driverOf("0000:02:00.0")).toBe("iwlwifi");
    mkdirSync(path.dirname(record()), { recursive: true });
    writeFileSync(record(), JSON.stringify({ bindings: [{ bdf: "../../../etc", group: 1, previousDriver: "", previousOverride: "" }] }));
    await releaseVfio(fake.host(), "sys-net", record(), log);
    expect(logs.at(-1)).toMatch(/does not match its schema/);
    expect(existsSync(record())).toBe(false);
  });
});

describe("what QEMU and its jail get", () => {
  it("a stand-in sysfs directory per device holding only the group link", async () => {
    const host = fake.host();
    const runtimeDir = path.join(run, "domains/sys-net");
    mkdirSync(runtimeDir, { recursive: true });
    makeVfioStandIns(host, runtimeDir, [{ bdf: "0000:02:00.0", group: 8, previousDriver: "iwlwifi", previousOverride: "" }]);
    expect(vfioStandIn(runtimeDir, "0000:02:00.0")).toBe(path.join(runtimeDir, "pci/0000:02:00.0"));
    expect(readlinkSync(path.join(runtimeDir, "pci/0000:02:00.0/iommu_group"))).toBe(path.join(fake.root, "sys/kernel/iommu_groups/8"));
    expect(statSync(path.join(runtimeDir, "pci/0000:02:00.0")).uid).toBe(0);
  });

  it("a locked-memory limit of guest RAM + 1 GiB, set by prlimit before the jail", async () => {
    expect(vfioMemlockBytes(300)).toBe(1324 * 1024 * 1024);
    expect(withMemlock(1024, ["/usr/bin/unshare", "--mount"])).toEqual(["/usr/bin/prlimit", "--memlock=1024:1024", "--", "/usr/bin/unshare", "--mount"]);
  });

  it("refuses when qvmd could not raise the VMM's locked-memory limit, naming LimitMEMLOCK", async () => {
    const limits = (hard: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              ${hard}              bytes\n`;
    const GIB2 = 2 * 1024 * 1024 * 1024;
    const withCap = "CapEff:\t000001ffffffffff\n";
    const withoutCap = "CapEff:\t000001fffeffffff\n";
    expect(() => checkMemlock("sys-net", GIB2, limits("8388608"), withoutCap)).toThrow(/^sys-net: VFIO pins all guest memory, so its VMM must be allowed to lock 2048 MiB, but qvmd's own limit is 8 MiB .*LimitMEMLOCK=infinity/);
    expect(() => checkMemlock("sys-net", GIB2, limits("8388608"), withCap)).not.toThrow();
    expect(() => checkMemlock("sys-net", GIB2, limits("unlimited"), withoutCap)).not.toThrow();
    expect(() => checkMemlock("sys-net", GIB2, limits(String(2 * GIB2)), withoutCap)).not.toThrow();
  });
});
