import { describe, expect, it } from "vitest";
import { KeyedMutex } from "./keyed-mutex.js";

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe("KeyedMutex", () => {
  it("runs calls on one key one at a time, in arrival order", async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const job = (id: string) => m.run("work", async () => {
      log.push(`${id}+`);
      await tick();
      log.push(`${id}-`);
    });
    await Promise.all([job("a"), job("b"), job("c")]);
    expect(log).toEqual(["a+", "a-", "b+", "b-", "c+", "c-"]);
  });

  it("runs different keys concurrently and multi-key calls after all their keys", async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const a = m.run("a", async () => { log.push("a+"); await tick(20); log.push("a-"); });
    const b = m.run("b", async () => { log.push("b+"); await tick(5); log.push("b-"); });
    const ab = m.run(["b", "a"], () => { log.push("ab"); });
    await Promise.all([a, b, ab]);
    expect(log).toEqual(["a+", "b+", "b-", "a-", "ab"]);
  });

  it("releases the key when the call throws", async () => {
    const m = new KeyedMutex();
    await expect(m.run("k", () => { throw new Error("boom"); })).rejects.toThrow("boom");
    expect(await m.run("k", () => 42)).toBe(42);
  });
});
