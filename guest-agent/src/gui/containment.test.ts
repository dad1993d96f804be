// Containment with real processes: the process-group fallback ends a window's processes and what
// they forked; the cgroup wrapper moves a process before it runs its program. The cgroup files
// are plain files in a temporary directory here (a host running the tests may have no cgroup v2);
// inside a domain they are the kernel's.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup, processGroups, sweepWindowCgroups, windowCgroupParent } from "./containment.js";
import { spawnWindowProcess } from "./system.js";

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-contain-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ENV = { PATH: "/usr/bin:/bin" };
const gone = (pid: number) => {
  try {
    // A zombie not yet reaped by init counts as gone: it runs nothing.
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
};
const until = async (f: () => boolean, ms = 3000) => {
  for (const end = Date.now() + ms; !f() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  return f();
};

describe("process groups (the fallback without cgroup v2)", () => {
  it("kill a window's process and what it started in the background, and the agent reaps its child", async () => {
    const c = processGroups();
    const p = spawnWindowProcess({ file: "sh", args: ["-c", "sleep 60 & echo $! >&2; wait"], env: ENV, cwd: "/" }, c);
    expect(await until(() => /^\d+\n/.test(p.stderrTail()))).toBe(true);
    const grandchild = Number(p.stderrTail().trim());
    expect(gone(grandchild)).toBe(false);
    c.killAll([p.pid!]);
    expect(await p.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(p.hasExited()).toBe(true);
    expect(await until(() => gone(grandchild))).toBe(true);
  });

  it("report a program that cannot be started as exit 127", async () => {
    const p = spawnWindowProcess({ file: "/nonexistent/program", args: [], env: ENV, cwd: "/" }, processGroups());
    expect(await p.exited).toEqual({ code: 127, signal: null });
  });
});

describe("a window's cgroup", () => {
  it("is entered by the process itself before its program runs, with argv passed untouched", async () => {
    const cg = path.join(dir, "cg-wrap");
    mkdirSync(cg);
    writeFileSync(path.join(cg, "cgroup.procs"), "");
    const c = cgroup(cg);
    expect(c.detached).toBe(false);
    const argv = ["sh", "-c", 'printf "%s|" "$@" >&2', "x", "a b", "'", '"$HOME"', "$(id)"];
    const p = spawnWindowProcess({ file: argv[0]!, args: argv.slice(1), env: ENV, cwd: "/" }, c);
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.stderrTail()).toBe(`a b|'|"$HOME"|$(id)|`);
    // The shell wrote its own pid, which exec made the program's.
    expect(readFileSync(path.join(cg, "cgroup.procs"), "utf8").trim()).toBe(String(p.pid));
  });

  it("is killed through cgroup.kill and is empty once cgroup.events says so", () => {
    const cg = path.join(dir, "cg-kill");
    mkdirSync(cg);
    writeFileSync(path.join(cg, "cgroup.events"), "populated 1\nfrozen 0\n");
    const c = cgroup(cg);
    c.killAll([]);
    expect(readFileSync(path.join(cg, "cgroup.kill"), "utf8")).toBe("1");
    expect(c.empty()).toBe(false);
    writeFileSync(path.join(cg, "cgroup.events"), "populated 0\nfrozen 0\n");
    expect(c.empty()).toBe(true);
  });

  it("goes under the agent's own cgroup when cgroup v2 is there and writable", () => {
    const root = path.join(dir, "cgfs");
    const own = path.join(root, "system.slice/qvm-agent.service");
    mkdirSync(own, { recursive: true });
    const self = path.join(dir, "self-cgroup");
    writeFileSync(self, "0::/system.slice/qvm-agent.service\n");
    expect(windowCgroupParent(root, self)).toBeUndefined(); // not cgroup v2: no cgroup.controllers
    writeFileSync(path.join(root, "cgroup.controllers"), "cpu memory pids\n");
    expect(windowCgroupParent(root, self)).toBe(own);
    writeFileSync(self, "0::/system.slice/../../etc\n");
    expect(windowCgroupParent(root, self)).toBeUndefined();
    writeFileSync(self, "0::/system.slice/missing.service\n");
    expect(windowCgroupParent(root, self)).toBeUndefined();
    writeFileSync(self, "1:name=systemd:/\n");
    expect(windowCgroupParent(root, self)).toBeUndefined();
  });

  it("left by an earlier agent are killed and removed, and nothing else", async () => {
    const parent = path.join(dir, "sweep");
    for (const [name, populated] of [["qvm-window-3", 1], ["qvm-window-12", 0], ["other", 1]] as const) {
      mkdirSync(path.join(parent, name), { recursive: true });
      writeFileSync(path.join(parent, name, "cgroup.events"), `populated ${populated}\n`);
    }
    expect((await sweepWindowCgroups(parent, 100)).sort()).toEqual(["qvm-window-12", "qvm-window-3"]);
    expect(readFileSync(path.join(parent, "qvm-window-3/cgroup.kill"), "utf8")).toBe("1");
    expect(() => readFileSync(path.join(parent, "qvm-window-12/cgroup.kill"))).toThrow(); // empty already
    expect(() => readFileSync(path.join(parent, "other/cgroup.kill"))).toThrow();
  });
});
