// The qvm workflow end to end: the real `qvm` CLI, a real qvmd, real VMs. Covers the README flow,
// qvmd crashing while domains run (re-attach, autostart) and VMMs dying under the daemon.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventTypeWord, type DomainInWords, type adminV1 } from "@qvm/protocol";
import { processesMentioning } from "./fixtures.js";
import { withDaemon, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;

function qvm(...args: string[]) {
  return d.qvm(args);
}

async function state(name: string): Promise<DomainInWords> {
  const r = await qvm("ls", "--json");
  expect(r.exitCode, r.stderr).toBe(0);
  const dom = (JSON.parse(r.stdout) as DomainInWords[]).find((x) => x.name === name);
  expect(dom, `${name} in qvm ls --json`).toBeDefined();
  return dom!;
}

beforeAll(async () => {
  d = await withDaemon("e2e-daemon");
});

// Whatever a failed test left running (qvmd killed included) is killed and checked for leaks.
afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("qvm CLI and qvmd with real VMs", () => {
  it("runs the README flow: create, prefs, start, run, ls, shutdown", async () => {
    expect((await qvm("ls", "--json")).stdout).toContain('"debian-12"'); // registered from the built image
    let r = await qvm("create", "--class", "AppVM", "--template", "debian-12", "--label", "red", "work");
    expect(r.exitCode, r.stderr).toBe(0);
    r = await qvm("prefs", "work", "memory", "800");
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await qvm("prefs", "work", "memory")).stdout.trim()).toBe("800");
    r = await qvm("start", "work");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await state("work")).toMatchObject({ state: "Running", class: "AppVM", label: "red", template: "debian-12" });

    r = await qvm("run", "--pass-io", "work", "--", "uname", "-a");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Linux work .*GNU\/Linux$/m); // the hostname is the domain's name
    r = await qvm("run", "--pass-io", "work", "--", "sh", "-c", "id -un; free -m | awk '/Mem:/ {print $2}'; exit 7");
    expect(r.exitCode).toBe(7);
    const [user, memMiB] = r.stdout.trim().split("\n");
    expect(user).toBe("user"); // default_user
    expect(Number(memMiB)).toBeGreaterThan(600); // the 800 MiB set with prefs, less the kernel's share
    expect(Number(memMiB)).toBeLessThanOrEqual(800);

    // The serial console carries what the guest writes to /dev/console.
    const con = d.client.console();
    let consoleOut = "";
    con.on("data", (m: adminV1.ConsoleResponse) => (consoleOut += m.output.toString("latin1")));
    con.on("error", () => {});
    con.write({ msg: { $case: "start", value: { domain: "work" } } });
    await new Promise((res) => setTimeout(res, 300));
    r = await qvm("run", "--pass-io", "--user", "root", "work", "--", "sh", "-c", "echo CONSOLE-MARK-$((6*7)) > /dev/console");
    expect(r.exitCode, r.stderr).toBe(0);
    await expect.poll(() => consoleOut, { timeout: 10_000 }).toContain("CONSOLE-MARK-42");
    con.cancel();

    r = await qvm("ls");
    expect(r.stdout).toMatch(/^NAME\s+STATE\s+CLASS\s+LABEL\s+TEMPLATE\s+NETVM$/m);
    // Under TCG (these machines), the state is marked: no hardware isolation.
    expect(r.stdout).toMatch(/^work\s+Running\*\s+AppVM\s+red\s+debian-12\s+-$/m);
    expect(r.stderr).toContain("runs under TCG software emulation: no hardware isolation");

    r = await qvm("start", "work");
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe("qvm: work is already running");
    r = await qvm("remove", "--force", "work");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("stop it first");

    r = await qvm("shutdown", "--wait", "work");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await state("work")).toMatchObject({ state: "Halted", lastStopReason: "the guest powered off" });
    r = await qvm("shutdown", "work");
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe("qvm: work is not running");
  });

  it("re-attaches to running domains after qvmd is SIGKILLed, and starts autostart domains", async () => {
    expect((await qvm("create", "--template", "debian-12", "--label", "blue", "--prop", "memory=600", "keep")).exitCode).toBe(0);
    expect((await qvm("create", "--template", "debian-12", "--label", "green", "--prop", "memory=600", "--prop", "autostart=true", "auto")).exitCode).toBe(0);
    expect((await qvm("start", "keep")).exitCode).toBe(0);
    const { vmmPid } = await state("keep");
    expect(vmmPid).toBeGreaterThan(0);

    await d.kill();
    process.kill(vmmPid, 0); // the VMM outlived its daemon
    await d.restart();
    expect(await state("keep")).toMatchObject({ state: "Running", vmmPid });
    const r = await qvm("run", "--pass-io", "keep", "--", "cat", "/proc/uptime");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(d.log()).toContain("keep: re-attached to the running VMM");

    // A guest that does not power off in time keeps running unless --force (Qubes' meaning).
    expect((await qvm("run", "--pass-io", "--user", "root", "keep", "--", "systemctl", "mask", "--runtime", "poweroff.target")).exitCode).toBe(0);
    expect((await qvm("prefs", "keep", "shutdown_timeout", "3")).exitCode).toBe(0);
    const refused = await qvm("shutdown", "--wait", "keep");
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr.trim()).toBe("qvm: keep did not power off within 3 s; it still runs: use `qvm shutdown --force` or `qvm kill keep`");
    expect(await state("keep")).toMatchObject({ state: "Running", vmmPid });

    await expect.poll(async () => (await state("auto")).state, { timeout: 120_000, interval: 1000 }).toBe("Running");
  });

  it("notices a SIGKILLed VMM within 2 s, both for a re-attached domain and for its own child", async () => {
    const events: adminV1.Event[] = [];
    const stream = d.client.watchEvents({ domain: "" });
    stream.on("data", (e: adminV1.Event) => events.push(e));
    stream.on("error", () => {});
    await new Promise((r) => setTimeout(r, 100));
    for (const name of ["keep", "auto"]) {
      const { vmmPid } = await state(name);
      // 0 would be kill(0): this test's whole process group (a domain that did not start).
      expect(vmmPid, `${name} has no VMM`).toBeGreaterThan(0);
      const t0 = Date.now();
      process.kill(vmmPid, "SIGKILL");
      await expect.poll(() => events.find((e) => eventTypeWord(e.type) === "domain-shutdown" && e.domain === name), { timeout: 2000, interval: 50 }).toBeTruthy();
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(await state(name)).toMatchObject({ state: "Halted", vmmPid: 0 });
      expect((await state(name)).lastStopReason).toMatch(/SIGKILL|exited unexpectedly/);
    }
    stream.cancel();
    // No VMM or vsock helper left; only qvmd itself names the test directory.
    expect(processesMentioning(d.dirs.base).filter((pid) => pid !== d.proc.pid)).toEqual([]);
  });
});
