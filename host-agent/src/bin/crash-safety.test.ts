// Kills qvmd with SIGKILL at random points of a create/clone/remove loop: after each restart the
// store must load and hold exactly the domains whose create/clone had returned, minus those whose
// remove had returned. Calls cut off by the kill may have landed or not; either is fine.
import { readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "../testing/test-daemon.js";

/** Small deterministic generator so a failing run can be replayed from the printed seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const dirs = testDaemonDirs("killloop");
afterAll(() => removeTestDaemonDirs(dirs));

describe("crash safety of the domain store", () => {
  it("SIGKILL at random points of a create/clone/remove loop loses no acknowledged change", async () => {
    const seed = Number(process.env.QVM_TEST_SEED ?? Date.now() % 100000);
    const random = rng(seed);
    const present = new Set<string>(["base"]);
    const absent = new Set<string>();
    const uncertain = new Set<string>();
    let next = 0;
    let totalOps = 0;

    for (let round = 0; round < 8; round++) {
      const d = await startTestDaemon(dirs);
      const names = new Set((await d.client.listDomains({})).domains.map((x) => x.name));
      if (round === 0) await d.client.createDomain({ name: "base", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
      else {
        for (const n of present) expect(names.has(n), `seed ${seed}: acknowledged domain ${n} is missing after SIGKILL`).toBe(true);
        for (const n of absent) expect(names.has(n), `seed ${seed}: removed domain ${n} came back after SIGKILL`).toBe(false);
        // One volume set per domain: what a kill left half-made is removed, volumes of a create
        // cut short after they were made (or of a remove cut short) are kept aside in .orphans.
        expect(readdirSync(path.join(dirs.dataDir, "volumes")).filter((n) => n !== ".orphans").sort(), `seed ${seed}`).toEqual([...names].sort());
      }
      for (const n of uncertain) (names.has(n) ? present : absent).add(n);
      for (const n of uncertain) (names.has(n) ? absent : present).delete(n);
      uncertain.clear();

      const killAfter = 50 + Math.floor(random() * 400);
      const timer = setTimeout(() => d.proc.kill("SIGKILL"), killAfter);
      try {
        for (;;) {
          const apps = [...present].filter((n) => n !== "base");
          const r = random();
          if (r < 0.45 || apps.length === 0) {
            const name = `d${next++}`;
            uncertain.add(name);
            await d.client.createDomain({ name, class: domainClassFromWord("AppVM"), template: "base", label: "blue", properties: { memory: String(200 + next) } });
            present.add(name);
          } else if (r < 0.7) {
            const name = `d${next++}`;
            uncertain.add(name);
            await d.client.cloneDomain({ source: apps[Math.floor(random() * apps.length)]!, name });
            present.add(name);
          } else {
            const victim = apps[Math.floor(random() * apps.length)]!;
            present.delete(victim);
            uncertain.add(victim);
            await d.client.removeDomain({ name: victim });
            absent.add(victim);
          }
          uncertain.delete([...uncertain].at(-1)!);
          totalOps++;
        }
      } catch (err) {
        expect((err as { code?: string }).code, `seed ${seed}: ${(err as Error).message}`).toBe("DAEMON_UNAVAILABLE");
      } finally {
        clearTimeout(timer);
        await d.kill();
      }
    }
    const d = await startTestDaemon(dirs);
    const names = new Set((await d.client.listDomains({})).domains.map((x) => x.name));
    for (const n of present) expect(names.has(n), `seed ${seed}: ${n} missing`).toBe(true);
    for (const n of absent) expect(names.has(n), `seed ${seed}: ${n} came back`).toBe(false);
    expect(totalOps).toBeGreaterThan(20);
    await d.stop();
  }, 120_000);
});

describe("a damaged store", () => {
  it("stops qvmd with an error naming the file and its previous generation, and is left as it was", async () => {
    const { mkdirSync, readFileSync, writeFileSync } = await import("node:fs");
    const path = await import("node:path");
    const broken = testDaemonDirs("corrupt");
    try {
      const d = await startTestDaemon(broken);
      await d.client.createDomain({ name: "t", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
      expect(await d.stop()).toBe(0);
      const file = path.join(broken.dataDir, "qvm.json");
      const torn = readFileSync(file, "utf8").slice(0, 100); // a half-written file
      writeFileSync(file, torn);
      mkdirSync(broken.runtimeDir, { recursive: true });
      await expect(startTestDaemon(broken, 5000)).rejects.toThrow(/qvm\.json is not valid JSON \(corrupt or half-written\); the previous generation is in .*qvm\.json\.prev/);
      expect(readFileSync(file, "utf8")).toBe(torn); // reported, not replaced
    } finally {
      removeTestDaemonDirs(broken);
    }
  });
});
