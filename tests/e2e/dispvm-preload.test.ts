// Preloaded disposables with real VMs (Qubes 4.3's preload-dispvm-max): qvmd boots one
// disposable of the template and pauses it; it is refused by name (`qvm run`, `qvm unpause`); a
// restarted qvmd takes it back paused; `qvm run --dispvm` is then handed that one and a new one
// is preloaded, which a qrexec call from a domain cannot reach by name even where the policy
// allows it; preload-dispvm-max 0 removes it. Two boots in all (~20 s each under TCG when the
// machine is idle).
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withDaemon, withService, type E2eDaemon, type E2eService } from "./qvmd-fixtures.js";

let d: E2eDaemon;
/** The first preload, then the disposable `qvm run --dispvm` runs in. */
let first = "";
/** The `qvm run --dispvm` holding `first` for the qrexec check. */
let held: E2eService | undefined;

interface Listed {
  name: string;
  class: string;
  state: string;
  isPreload?: boolean;
}

async function ok(...args: string[]): Promise<string> {
  const r = await d.qvm(args);
  expect(r.exitCode, `qvm ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function disposables(): Promise<Listed[]> {
  const r = await d.qvm(["ls", "--json"]);
  if (r.exitCode !== 0) throw new Error(`qvm ls --json: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Listed[]).filter((x) => x.class === "DispVM");
}
const preloads = async () => (await disposables()).filter((x) => x.isPreload);

/** The one preload of dvm once it is in `state` (any state without one); polls up to `ms`. */
async function preloadIn(state: string | undefined, ms = 180_000): Promise<string> {
  let name = "";
  await expect
    .poll(
      async () => {
        const p = await preloads();
        name = p.length === 1 && (!state || p[0]!.state === state) ? p[0]!.name : "";
        return name !== "";
      },
      { timeout: ms, interval: 500 },
    )
    .toBe(true);
  return name;
}

beforeAll(async () => {
  d = await withDaemon("e2e-dispvm-preload");
  // Any domain may call test.Echo anywhere: a refusal can then only come from the preload check.
  writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), "test.Echo * @anyvm @anyvm allow\n");
  await ok("create", "--template", "debian-12", "--label", "red", "--prop", "template_for_dispvms=true", "--prop", "memory=600", "dvm");
});

afterAll(async () => {
  await held?.stop().catch(() => {});
  if (!d) return;
  // Nothing may be preloading when the daemon goes: a boot ending after it would leak its VM.
  await d.qvm(["features", "dvm", "preload-dispvm-max", "0"]);
  for (const end = Date.now() + 120_000; Date.now() < end && (await disposables().catch(() => [])).length; ) await new Promise((r) => setTimeout(r, 1000));
  await d[Symbol.asyncDispose]();
});

describe("preloaded disposables with real VMs", () => {
  it("preload-dispvm-max 1 boots one disposable and pauses it; it is refused by name", async () => {
    expect(await disposables()).toEqual([]); // nothing unasked
    await ok("features", "dvm", "preload-dispvm-max", "1");
    first = await preloadIn("Paused");
    expect(first).toMatch(/^disp\d+$/);
    expect((await ok("features", "dvm", "preload-dispvm")).trim()).toBe(first);
    for (const args of [["run", "--pass-io", first, "--", "true"], ["unpause", first]]) {
      const r = await d.qvm(args);
      expect(r.exitCode, `qvm ${args.join(" ")}`).toBe(1);
      expect(r.stderr).toContain(`${first} is a preloaded disposable of dvm`);
    }
    expect((await preloads()).map((x) => [x.name, x.state])).toEqual([[first, "Paused"]]);
  });

  it("a restarted qvmd takes the paused preload back", async () => {
    await d.restart();
    expect(d.log()).toContain(`${first}: preloaded disposable of dvm taken back`);
    expect((await preloads()).map((x) => [x.name, x.state])).toEqual([[first, "Paused"]]);
  });

  it("`qvm run --dispvm=dvm` runs in the preloaded disposable; a new one is preloaded, which a qrexec call cannot reach by name", async () => {
    held = await withService(d, ["run", "--dispvm=dvm", "--pass-io", "--no-pty", "--", "sh", "-c", "hostname; echo hi; exec sleep 600"], { ready: /hi\n/ });
    expect(held.stdout().split("\n").slice(0, 2)).toEqual([first, "hi"]);
    expect((await disposables()).find((x) => x.name === first)).toMatchObject({ state: "Running", isPreload: false });
    const second = await preloadIn(undefined);
    expect(second).not.toBe(first);
    // Booting or paused, it is no one's yet: the policy allows the call, qvmd refuses it.
    const r = await d.qvm(["run", "--pass-io", "--no-pty", first, "--", "sh", "-c", `qrexec-client-vm ${second} test.Echo </dev/null; echo rc=$?`]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain("rc=126");
    expect(d.log()).toMatch(new RegExp(`allowed to ${second}, but it cannot run there: ${second} is a preloaded disposable of dvm`));
    await held.stop();
    held = undefined;
    await expect.poll(async () => (await disposables()).map((x) => x.name), { timeout: 30_000, interval: 500 }).toEqual([second]);
  });

  it("preload-dispvm-max 0 removes the preload", async () => {
    await ok("features", "dvm", "preload-dispvm-max", "0");
    await expect.poll(async () => (await disposables()).length, { timeout: 180_000, interval: 1000 }).toBe(0);
    expect(await ok("features", "dvm")).not.toContain("preload-dispvm ");
  });
});
