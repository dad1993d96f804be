// The volume model with real VMs: an AppVM's root is a snapshot of its template's, kept in
// DATA/volatile (not the RAM-backed runtime directory) and discarded at stop, while /home (on the
// private volume) persists; a template updated while an AppVM runs is seen by that AppVM at its
// next start, not before; a disposable leaves no volume, overlay or log behind.
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { processesMentioning, alive } from "./fixtures.js";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;

function qvm(...args: string[]) {
  return d.qvm(args);
}

async function ok(...args: string[]): Promise<string> {
  const r = await qvm(...args);
  expect(r.exitCode, `qvm ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  d = await withDaemon("e2e-storage");
  // Started by the first test; the tests after it go on with what it left.
  await withDomain(d, "st", { label: "blue", properties: { memory: "600" } });
});

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("volumes with real VMs", () => {
  it("a file written to / of an AppVM is gone after a restart, one in /home stays", async () => {
    await ok("start", "st");
    expect(existsSync(path.join(d.dirs.dataDir, "volatile/st/root.qcow2"))).toBe(true);
    expect(existsSync(path.join(d.dirs.runtimeDir, "domains/st/root.qcow2"))).toBe(false);
    await ok("run", "--pass-io", "--user", "root", "st", "--", "sh", "-c", "echo root-change > /marker && sync");
    await ok("run", "--pass-io", "st", "--", "sh", "-c", "echo kept > /home/user/kept && mkdir -p /home/user/dir && echo deep > /home/user/dir/f && sync");
    expect((await ok("run", "--pass-io", "st", "--", "findmnt", "-n", "-o", "TARGET", "/rw")).trim()).toBe("/rw");
    await ok("shutdown", "--wait", "st");
    expect(existsSync(path.join(d.dirs.dataDir, "volatile/st"))).toBe(false);
    await ok("start", "st");
    const r = await qvm("run", "--pass-io", "st", "--", "sh", "-c", "cat /home/user/kept /home/user/dir/f; test -e /marker && echo MARKER-STILL-THERE; ls -ld /home/user | cut -d' ' -f3");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(["kept", "deep", "user"]);
  });

  it("a change to the template reaches its AppVM at the AppVM's next start, not while it runs", async () => {
    // st is running from the previous test; update the template meanwhile.
    await ok("start", "debian-12");
    await ok("run", "--pass-io", "--user", "root", "debian-12", "--", "sh", "-c", "echo v2 > /etc/qvm-template-mark && sync");
    await ok("shutdown", "--wait", "debian-12");
    let r = await qvm("run", "--pass-io", "st", "--", "sh", "-c", "cat /etc/qvm-template-mark 2>/dev/null || echo absent");
    expect(r.stdout.trim()).toBe("absent");
    await ok("shutdown", "--wait", "st");
    await ok("start", "st");
    r = await qvm("run", "--pass-io", "st", "--", "cat", "/etc/qvm-template-mark", "/home/user/kept");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(["v2", "kept"]);
    await ok("shutdown", "--wait", "st");
  });

  it("revert brings back the private volume as it was before the last start; resize grows it while running", async () => {
    const before = JSON.parse(await ok("volume", "list", "st", "--json")) as Array<{ name: string; revisions: string[]; sizeBytes: number }>;
    expect(before.find((v) => v.name === "private")?.revisions.length).toBe(1); // revisions_to_keep 1
    await ok("start", "st");
    await ok("volume", "resize", "st:private", "3G");
    const df = await ok("run", "--pass-io", "st", "--", "df", "--output=size", "-B", "1M", "/rw");
    expect(Number(df.trim().split("\n").at(-1))).toBeGreaterThan(2900); // the filesystem grew with the volume (ext4 keeps some)
    await ok("run", "--pass-io", "st", "--", "sh", "-c", "echo later > /home/user/later && sync");
    await ok("shutdown", "--wait", "st");
    await ok("volume", "revert", "st:private");
    await ok("start", "st");
    const r = await qvm("run", "--pass-io", "st", "--", "sh", "-c", "cat /home/user/kept; test -e /home/user/later && echo LATER-STILL-THERE || echo reverted");
    expect(r.stdout.trim().split("\n")).toEqual(["kept", "reverted"]);
    await ok("shutdown", "--wait", "st");
  });

  it("a disposable runs the command and leaves nothing behind, also when the command crashes", async () => {
    await ok("create", "--template", "debian-12", "--label", "red", "--prop", "template_for_dispvms=true", "--prop", "memory=600", "dvm");
    await ok("prefs", "--global", "default_dispvm", "dvm");
    let r = await qvm("run", "--dispvm=dvm", "--pass-io", "--", "sh", "-c", "echo hi; hostname");
    expect(r.exitCode, r.stderr).toBe(0);
    const [hi, host] = r.stdout.trim().split("\n");
    expect(hi).toBe("hi");
    expect(host).toMatch(/^disp\d{1,4}$/);
    r = await qvm("run", "--dispvm", "--pass-io", "--", "sh", "-c", "kill -SEGV $$");
    expect(r.exitCode).toBe(139);
    const names = (JSON.parse(await ok("ls", "--json")) as Array<{ name: string }>).map((x) => x.name);
    expect(names.filter((n) => n.startsWith("disp"))).toEqual([]);
    expect(readdirSync(path.join(d.dirs.runtimeDir, "domains")).filter((n) => n.startsWith("disp"))).toEqual([]);
    expect(existsSync(path.join(d.dirs.dataDir, "volumes", host!))).toBe(false);
    expect(existsSync(path.join(d.dirs.dataDir, "volatile", host!))).toBe(false);
    expect(existsSync(path.join(d.dirs.dataDir, "logs", host!))).toBe(false);
    expect(processesMentioning(`/domains/${host}`)).toEqual([]);
  });

  it("a disposable whose qvmd crashed during the run is destroyed when qvmd starts again", async () => {
    const run = qvm("run", "--dispvm", "--pass-io", "--", "sleep", "600");
    let disp: { name: string; vmmPid: number } | undefined;
    await expect
      .poll(async () => {
        const all = JSON.parse(await ok("ls", "--json")) as Array<{ name: string; state: string; vmmPid: number }>;
        disp = all.find((x) => x.name.startsWith("disp") && x.state === "Running");
        return disp !== undefined;
      }, { timeout: 120_000, interval: 1000 })
      .toBe(true);
    await d.kill();
    await run; // the CLI loses its daemon and exits
    await d.restart();
    expect(d.log()).toContain(`${disp!.name}: disposable left by an earlier qvmd; destroying it`);
    expect((JSON.parse(await ok("ls", "--json")) as Array<{ name: string }>).map((x) => x.name).filter((n) => n.startsWith("disp"))).toEqual([]);
    // Gone, or a zombie its new parent has not reaped yet (qvmd that started it is dead).
    expect(alive(disp!.vmmPid)).toBe(false);
    expect(existsSync(path.join(d.dirs.runtimeDir, "domains", disp!.name))).toBe(false);
  });
});
