import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cgroupVersion, makeDomainCgroups, removeDomainCgroups } from "./cgroups.js";

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), "qvm-cg-"));
  dirs.push(d);
  return d;
};
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

const limits = { memoryBytes: 1536 * 1024 * 1024, pids: 256 };

describe("VMM cgroups", () => {
  it("v2 (fake cgroupfs): qvmd moves to a leaf, the domain gets memory.max, no swap, pids.max", () => {
    const root = tmp();
    mkdirSync(path.join(root, "system.slice/qvmd.service"), { recursive: true });
    writeFileSync(path.join(root, "cgroup.controllers"), "cpu memory pids");
    const host = { root, selfCgroup: "0::/system.slice/qvmd.service\n" };
    expect(cgroupVersion(host)).toBe(2);
    const cg = makeDomainCgroups(host, "work", limits);
    const own = path.join(root, "system.slice/qvmd.service");
    expect(readFileSync(path.join(own, "qvmd/cgroup.procs"), "utf8")).toBe(String(process.pid));
    expect(readFileSync(path.join(own, "cgroup.subtree_control"), "utf8")).toBe("+memory +pids");
    const dir = path.join(own, "qvm-vms/work");
    expect(cg).toEqual({ dirs: [dir], procs: [path.join(dir, "cgroup.procs")] });
    expect(readFileSync(path.join(dir, "memory.max"), "utf8")).toBe(String(limits.memoryBytes));
    expect(readFileSync(path.join(dir, "memory.swap.max"), "utf8")).toBe("0");
    expect(readFileSync(path.join(dir, "pids.max"), "utf8")).toBe("256");
    // A second domain reuses the tree without moving qvmd again.
    writeFileSync(path.join(own, "qvmd/cgroup.procs"), "moved-before");
    makeDomainCgroups(host, "bank", limits);
    expect(readFileSync(path.join(own, "qvmd/cgroup.procs"), "utf8")).toBe("moved-before");
  });

  it("v1 (a fake tree shaped like this machine's): memory and pids directories below qvmd's own", () => {
    const root = tmp();
    for (const c of ["memory/process_api/abc", "pids"]) mkdirSync(path.join(root, c), { recursive: true });
    const host = { root, selfCgroup: "8:pids:/\n4:memory:/process_api/abc\n0::/\n" };
    expect(cgroupVersion(host)).toBe(1);
    const cg = makeDomainCgroups(host, "work", limits);
    expect(cg.dirs).toEqual([path.join(root, "memory/process_api/abc/qvm-vms/work"), path.join(root, "pids/qvm-vms/work")]);
    expect(readFileSync(path.join(cg.dirs[0]!, "memory.limit_in_bytes"), "utf8")).toBe(String(limits.memoryBytes));
    expect(readFileSync(path.join(cg.dirs[1]!, "pids.max"), "utf8")).toBe("256");
  });

  it("refuses a host without the controllers, naming what to mount", () => {
    expect(() => makeDomainCgroups({ root: tmp(), selfCgroup: "0::/\n" }, "work", limits)).toThrow(/no memory and pids cgroup controllers/);
  });

  it("on this machine (root, as the test command runs): the kernel takes the limits and the cgroups go away", () => {
    const host = { root: "/sys/fs/cgroup", selfCgroup: readFileSync("/proc/self/cgroup", "utf8") };
    const version = cgroupVersion(host);
    const cg = makeDomainCgroups(host, `qvm-test-${process.pid}`, limits);
    const limitFile = version === 1 ? "memory.limit_in_bytes" : "memory.max";
    expect(Number(readFileSync(path.join(cg.dirs[0]!, limitFile), "utf8"))).toBe(limits.memoryBytes);
    removeDomainCgroups(cg.dirs);
    expect(cg.dirs.some((d) => existsSync(d))).toBe(false);
  });
});
