import { describe, expect, it } from "vitest";
import { EventBus } from "./events.js";

describe("EventBus", () => {
  it("numbers events in order and delivers them to every subscriber until it unsubscribes", () => {
    const bus = new EventBus();
    const a: number[] = [];
    const b: string[] = [];
    const offA = bus.subscribe((e) => a.push(e.seq));
    bus.subscribe((e) => b.push(`${e.type}:${e.domain}`));
    bus.publish("domain-add", "work");
    offA();
    bus.publish("domain-delete", "work", { why: "test" });
    expect(a).toEqual([1]);
    expect(b).toEqual(["domain-add:work", "domain-delete:work"]);
    expect(bus.subscriberCount).toBe(1);
  });

  it("a throwing subscriber does not stop the others", () => {
    const bus = new EventBus();
    const got: string[] = [];
    bus.subscribe(() => {
      throw new Error("broken subscriber");
    });
    bus.subscribe((e) => got.push(e.type));
    expect(() => bus.publish("tag-add", "w", { tag: "x" })).not.toThrow();
    expect(got).toEqual(["tag-add"]);
  });
});
