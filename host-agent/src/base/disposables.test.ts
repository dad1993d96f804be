import { describe, expect, it } from "vitest";
import { DisposableStore, toDisposable } from "./disposables.js";

describe("DisposableStore", () => {
  it("releases newest first, once, and reports failures without stopping", async () => {
    const order: string[] = [];
    const errors: string[] = [];
    const store = new DisposableStore((what, err) => errors.push(`${what}: ${err.message}`));
    store.add("a", toDisposable(() => void order.push("a")));
    store.add("b", toDisposable(() => {
      throw new Error("boom");
    }));
    store.add("c", toDisposable(async () => void order.push("c")));
    expect(store.held).toEqual(["a", "b", "c"]);
    await store.dispose();
    await store.dispose();
    expect(order).toEqual(["c", "a"]);
    expect(errors).toEqual(["b: boom"]);
    expect(store.held).toEqual([]);
  });

  it("releases at once what is added after it was disposed", async () => {
    const store = new DisposableStore();
    await store.dispose();
    let released = false;
    store.add("late", toDisposable(() => void (released = true)));
    await Promise.resolve();
    expect(released).toBe(true);
    expect(store.held).toEqual([]);
  });
});
