// The jail with real processes (root only, as qvmd itself): the command runs as the given uid with
// no new privileges and no capabilities, joins its cgroups, and sees exactly what was bound.
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jailArgv, jailTools, systemBinds, NIX_STORE } from "./jail.js";

// The test command runs as root, as qvmd does: these tests need it and always run.
const UID = 900_001_234;
let base: string;

function jailed(binds: Parameters<typeof jailArgv>[0]["binds"], script: string, cgroupProcs: string[] = []) {
  const argv = jailArgv({ uid: UID, gid: UID, groups: [], rootDir: path.join(base, "root"), cgroupProcs, binds }, ["/bin/sh", "-c", script]);
  return spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
}

describe("VMM jail (real processes, root)", () => {
  beforeAll(() => {
    base = mkdtempSync(path.join(os.tmpdir(), "qvm-jail-"));
    for (const d of ["root", "mine", "other", "ro", "we ird;$(x)"]) mkdirSync(path.join(base, d));
    writeFileSync(path.join(base, "mine/f"), "mine");
    writeFileSync(path.join(base, "other/f"), "other");
    writeFileSync(path.join(base, "ro/f"), "ro");
    writeFileSync(path.join(base, "we ird;$(x)/f"), "weird");
    chownSync(path.join(base, "mine"), UID, UID);
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it("runs as the domain's uid with no new privileges, no capabilities, and no groups", () => {
    const r = jailed([], "id -u; id -G; grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${UID}\n${UID}\n`);
    expect(r.stdout).toMatch(/NoNewPrivs:\s+1/);
    expect(r.stdout).toMatch(/CapEff:\s+0+\n/);
    expect(r.stdout).toMatch(/CapBnd:\s+0+\n/);
  });

  it("shows only what was bound: rw where asked, read-only elsewhere, nothing of other domains", () => {
    const r = jailed(
      [
        { path: path.join(base, "mine"), mode: "rw" },
        { path: path.join(base, "ro/f"), mode: "ro" },
      ],
      `cat ${base}/mine/f; echo; echo new > ${base}/mine/g && echo wrote-mine; cat ${base}/ro/f; echo; (echo x >> ${base}/ro/f) 2>/dev/null || echo ro-refused; cat ${base}/other/f 2>/dev/null || echo other-invisible; ls /`,
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split("\n").slice(0, 5)).toEqual(["mine", "wrote-mine", "ro", "ro-refused", "other-invisible"]);
    expect(r.stdout.split("\n").slice(5).filter(Boolean).sort()).toEqual(["bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"]);
  });

  it("takes paths as arguments, so a path with shell syntax is only a path", () => {
    const weird = path.join(base, "we ird;$(x)");
    const r = jailed([{ path: weird, mode: "ro" }], `cat '${weird}/f'`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("weird");
  });

  it("shows a host path at another path when asked (a restored VM's snapshot paths)", () => {
    const r = jailed(
      [
        { path: "/vm/run", from: path.join(base, "mine"), mode: "rw" },
        { path: "/vm/disk0", from: path.join(base, "ro/f"), mode: "ro" },
      ],
      `cat /vm/run/f; echo; echo moved > /vm/run/h && echo wrote; cat /vm/disk0; echo; cat ${base}/mine/f 2>/dev/null || echo host-path-hidden`,
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split("\n").slice(0, 4)).toEqual(["mine", "wrote", "ro", "host-path-hidden"]);
    expect(readFileSync(path.join(base, "mine/h"), "utf8")).toBe("moved\n");
  });

  it("keeps one pid from unshare to the command, so qvmd can watch it", () => {
    const argv = jailArgv({ uid: UID, gid: UID, groups: [], rootDir: path.join(base, "root"), cgroupProcs: [], binds: [] }, ["/bin/sh", "-c", "echo $$"]);
    const out = execFileSync("/bin/sh", ["-c", `"$@" & echo $!; wait`, "sh", ...argv], { encoding: "utf8" }).trim().split("\n");
    expect(out[1]).toBe(out[0]);
  });
});

describe("VMM jail on a NixOS host (no /usr/bin tools, programs in /nix/store)", () => {
  it("finds its tools through PATH and shows /nix/store read-only", () => {
    const nix = { unshare: "/run/current-system/sw/bin/unshare", sh: "/run/current-system/sw/bin/sh", setpriv: "/nix/store/abc-util-linux/bin/setpriv" };
    const tools = jailTools((name) => nix[name as keyof typeof nix]);
    expect(tools).toEqual(nix); // setpriv by its real path (not a symlink the view lacks): here, as given
    const argv = jailArgv({ uid: UID, gid: UID, groups: [], rootDir: "/run/qvm/jails/work", cgroupProcs: [], binds: [] }, ["/nix/store/q-qemu/bin/qemu-system-x86_64"], tools, systemBinds(true));
    expect(argv[0]).toBe(nix.unshare);
    expect(argv[5]).toBe(nix.sh);
    expect(argv).toContain(nix.setpriv);
    expect(argv.join(" ")).toContain(`ro ${NIX_STORE} ${NIX_STORE}`);
    expect(systemBinds(false).some((b) => b.path === NIX_STORE)).toBe(false);
  });

  it("without its tools, says which and how to install them", () => {
    expect(jailTools(() => undefined)).toBeUndefined();
    expect(() => jailArgv({ uid: UID, gid: UID, groups: [], rootDir: "/x", cgroupProcs: [], binds: [] }, ["true"], null)).toThrow(/unshare, setpriv/);
  });
});
