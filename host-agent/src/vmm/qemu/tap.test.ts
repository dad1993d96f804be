// Tap nics: QEMU's arguments, and qvm-tap-open (host-agent/native) compiled here and run against
// real tap devices in a throwaway network namespace (the tests run as root, as qvmd does): it
// opens the device, the command it execs holds it at the descriptor asked for and keeps the pid,
// and a missing, wrong or busy device is refused saying what to do. Then the driver's check at
// prepare, through the helper.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NicSpec, VmSpec } from "../driver.js";
import { buildQemuArgs, tapFds, withTapFds } from "./qemu-args.js";
import { QemuDriver } from "./qemu-driver.js";

const spec = (nics: NicSpec[], base = "/k"): VmSpec => ({
  name: "sys-net",
  runtimeDir: `${base}/run`,
  logDir: `${base}/log`,
  kernel: { image: `${base}/vmlinuz`, initrd: `${base}/initrd` },
  disks: [],
  memoryMiB: 400,
  vcpus: 1,
  guestCid: 3,
  nics,
});
const paths = { qmpSocket: "/r/qmp.sock", qmpFdSocket: "/r/qmp-fd.sock", consoleSocket: "/r/console.sock", consoleLog: "/l/console.log", vhostUserSocket: "/r/vu.sock" };
const values = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);
const nics: NicSpec[] = [
  { id: "eth0", mac: "00:16:3e:5e:6c:00", backend: { kind: "dgram-unix", local: "/r/net/eth0.sock", remote: "/r/net/eth0.peer" } },
  { id: "vif0", mac: "fe:ff:ff:ff:00:00", backend: { kind: "tap", ifname: "qvm-a" } },
  { id: "uplink", mac: "fe:ff:ff:fe:00:01", backend: { kind: "tap", ifname: "qvm-uplink" } },
  { id: "up2", mac: "fe:ff:ff:fe:00:02", backend: { kind: "stream-unix", path: "/r/net/passt.sock" } },
];

describe("tap nics on the QEMU command line", () => {
  it("gives each tap the next descriptor from 3, as -netdev tap,fd=N, next to the other kinds", () => {
    expect(tapFds(spec(nics))).toEqual([
      { id: "vif0", ifname: "qvm-a", fd: 3 },
      { id: "uplink", ifname: "qvm-uplink", fd: 4 },
    ]);
    expect(values(buildQemuArgs(spec(nics), "tcg", paths), "-netdev")).toEqual([
      "dgram,id=eth0,local.type=unix,local.path=/r/net/eth0.sock,remote.type=unix,remote.path=/r/net/eth0.peer",
      "tap,id=vif0,fd=3",
      "tap,id=uplink,fd=4",
      "stream,id=up2,server=off,addr.type=unix,addr.path=/r/net/passt.sock",
    ]);
    expect(values(buildQemuArgs(spec(nics), "tcg", paths), "-device")).toContain("virtio-net-device,netdev=uplink,mac=fe:ff:ff:fe:00:01");
    expect(tapFds(spec([]))).toEqual([]);
  });

  it("wraps the (jailed) command with the helper once per tap, outermost first", () => {
    expect(withTapFds("/h", tapFds(spec(nics)), ["jail", "qemu"])).toEqual(["/h", "qvm-a", "3", "--", "/h", "qvm-uplink", "4", "--", "jail", "qemu"]);
    expect(withTapFds("/h", [], ["qemu"])).toEqual(["qemu"]);
  });
});

let dir: string;
let helper: string;
const ns = `qvmt-tap-${process.pid}`;
const inNs = (argv: string[]) => execa("ip", ["netns", "exec", ns, ...argv], { reject: false });

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-tap-"));
  helper = path.join(dir, "qvm-tap-open");
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", helper, path.join(import.meta.dirname, "../../../native/qvm-tap-open.c")]);
  await execa("ip", ["netns", "add", ns]);
  for (const [dev, mode] of [["qvmtap0", "tap"], ["qvmtap1", "tap"], ["qvmtun0", "tun"]]) await execa("ip", ["-n", ns, "tuntap", "add", "dev", dev!, "mode", mode!]);
});

afterAll(async () => {
  await execa("ip", ["netns", "delete", ns], { reject: false });
  rmSync(dir, { recursive: true, force: true });
});

describe("qvm-tap-open", () => {
  it("opens the tap, puts it at FD and execs the command, which keeps the pid and the descriptor", async () => {
    // ip netns exec execs too: the shell's $$ is the pid of the process started here.
    const p = inNs([helper, "qvmtap0", "5", "--", "sh", "-c", 'echo $$; readlink /proc/self/fd/5; grep ^iff: /proc/self/fdinfo/5']);
    const r = await p;
    expect(r.exitCode, r.stderr).toBe(0);
    const [pid, target, iff] = r.stdout.split("\n");
    expect(Number(pid)).toBe(p.pid);
    expect(target).toBe("/dev/net/tun");
    expect(iff).toMatch(/^iff:\s+qvmtap0$/);
  });

  it("nests, one tap per helper, as the driver wraps the VMM", async () => {
    const r = await inNs(withTapFds(helper, [{ ifname: "qvmtap0", fd: 3 }, { ifname: "qvmtap1", fd: 4 }], ["sh", "-c", "grep -h ^iff: /proc/self/fdinfo/3 /proc/self/fdinfo/4"]));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.split("\n").map((l) => l.split(/\s+/)[1])).toEqual(["qvmtap0", "qvmtap1"]);
  });

  it("refuses a missing device, naming the command that makes it, and creates none", async () => {
    const r = await inNs([helper, "nosuch0", "3", "--", "true"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("no network device nosuch0");
    expect(r.stderr).toContain("`ip tuntap add dev nosuch0 mode tap`");
    expect((await execa("ip", ["-n", ns, "link", "show", "nosuch0"], { reject: false })).exitCode).not.toBe(0);
  });

  it("refuses a device that is not a tap (a tun, loopback) and one another process holds", async () => {
    for (const dev of ["qvmtun0", "lo"]) {
      const r = await inNs([helper, dev, "3", "--", "true"]);
      expect(r.exitCode, dev).toBe(1);
      expect(r.stderr).toContain(`${dev}: not a tap device`);
    }
    const busy = await inNs([helper, "qvmtap0", "3", "--", helper, "qvmtap0", "4", "--", "true"]);
    expect(busy.exitCode).toBe(1);
    expect(busy.stderr).toContain("qvmtap0: in use");
  });

  it("checks its arguments and reports a command it cannot run", async () => {
    for (const args of [["qvmtap0", "2", "--", "true"], ["qvmtap0", "x", "--", "true"], ["qvmtap0", "3", "true"], ["qvmtap0", "3", "--"], ["a".repeat(16), "3", "--", "true"]]) {
      const r = await inNs([helper, ...args]);
      expect(r.exitCode, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^usage: qvm-tap-open IFNAME FD -- COMMAND/);
    }
    const r = await inNs([helper, "qvmtap0", "3", "--", "/nonexistent/qemu"]);
    expect(r.exitCode).toBe(127);
    expect(r.stderr).toContain("cannot run /nonexistent/qemu");
  });
});

describe("QemuDriver with a tap nic", () => {
  const tcg = { accel: "tcg" as const, why: "test" };
  /** The helper, run in the test's namespace (the driver runs it in qvmd's). */
  const nsHelper = () => {
    const f = path.join(dir, "helper-in-ns");
    writeFileSync(f, `#!/bin/sh\nexec ip netns exec ${ns} ${helper} "$@"\n`);
    chmodSync(f, 0o755);
    return f;
  };
  const tapSpec = (ifname: string) => {
    for (const f of ["vmlinuz", "initrd"]) writeFileSync(path.join(dir, f), "");
    return spec([{ id: "uplink", mac: "fe:ff:ff:fe:00:01", backend: { kind: "tap", ifname } }], dir);
  };

  it("opens the device once at prepare: a missing one refuses the start, naming it and how to make it", async () => {
    const driver = new QemuDriver({ accel: tcg, allowTcg: true, tapOpenHelper: nsHelper() });
    const ok = await driver.prepare(tapSpec("qvmtap0"));
    expect(ok.command).toContain("tap,id=uplink,fd=3");
    await expect(driver.prepare(tapSpec("qvmgone0"))).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/^sys-net: cannot use tap device qvmgone0: no network device qvmgone0 .*`ip tuntap add dev qvmgone0 mode tap`/),
    });
  });

  it("says how to build the helper when it is missing", async () => {
    const driver = new QemuDriver({ accel: tcg, allowTcg: true, tapOpenHelper: path.join(dir, "absent") });
    await expect(driver.prepare(tapSpec("qvmtap0"))).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringContaining("npm run build") });
  });
});
