import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { systemNetHost } from "./host.js";

describe("systemNetHost", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), "qvm-net-host-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const host = () =>
    systemNetHost({
      sysClassNet: path.join(dir, "net"),
      resolvConf: path.join(dir, "etc", "resolv.conf"),
      procSys: path.join(dir, "sys"),
      stateFile: path.join(dir, "run", "qvm-agent", "net-applied.json"),
    });

  it("lists links by MAC from sysfs, lowercase, without lo or links that have no address", async () => {
    for (const [name, mac] of [
      ["lo", "00:00:00:00:00:00"],
      ["ens3", "52:54:00:AB:00:01"],
      ["eth0", "52:54:00:00:00:02"],
    ]) {
      mkdirSync(path.join(dir, "net", name ?? ""), { recursive: true });
      writeFileSync(path.join(dir, "net", name ?? "", "address"), `${mac}\n`);
    }
    mkdirSync(path.join(dir, "net", "bonding_masters"), { recursive: true });
    const links = await host().listLinks();
    expect(links.sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: "ens3", mac: "52:54:00:ab:00:01" },
      { name: "eth0", mac: "52:54:00:00:00:02" },
    ]);
  });

  it("replaces resolv.conf atomically (no temporary file left) and writes sysctls under /proc/sys", async () => {
    mkdirSync(path.join(dir, "etc"));
    writeFileSync(path.join(dir, "etc", "resolv.conf"), "nameserver 8.8.8.8\n");
    await host().writeResolvConf("nameserver 10.139.1.1\n");
    expect(readFileSync(path.join(dir, "etc", "resolv.conf"), "utf8")).toBe("nameserver 10.139.1.1\n");
    expect(readdirSync(path.join(dir, "etc"))).toEqual(["resolv.conf"]);
    mkdirSync(path.join(dir, "sys", "net", "ipv4"), { recursive: true });
    await host().setSysctl("net.ipv4.ip_forward", "1");
    expect(readFileSync(path.join(dir, "sys", "net", "ipv4", "ip_forward"), "utf8")).toBe("1\n");
  });

  it("keeps the applied state, and reads a missing or damaged one as none", async () => {
    const h = host();
    expect(await h.readState()).toBeUndefined();
    await h.writeState({ clients: { "10.137.0.5": "x" } });
    expect(await h.readState()).toEqual({ clients: { "10.137.0.5": "x" } });
    writeFileSync(path.join(dir, "run", "qvm-agent", "net-applied.json"), "{not json");
    expect(await h.readState()).toBeUndefined();
    writeFileSync(path.join(dir, "run", "qvm-agent", "net-applied.json"), JSON.stringify({ clients: { a: 1, b: "y" } }));
    expect(await h.readState()).toEqual({ clients: { b: "y" } });
  });

  it("resolves names to IPv4 addresses", async () => {
    expect(await host().resolve("localhost")).toContain("127.0.0.1");
  });
});
