// One-shot grants (grants.ts): exactly one call, once, within its time, in memory only.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { Clock } from "../base/clock.js";
import { installDefaultPolicy } from "./policy/default-policy.js";
import { DEFAULT_GRANT_TTL_MS, MAX_GRANTS, QrexecGrants } from "./grants.js";

class ManualClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  sleep(): Promise<void> {
    return new Promise(() => {});
  }
}

const usb = { source: "work", target: "sys-usb", service: "qubes.USB", argument: "2-1" };
const spec = { ...usb, why: "usb attach of sys-usb:2-1 to work" };

describe("one-shot qrexec grants", () => {
  it("allows the one call it names, once, as root", () => {
    const g = new QrexecGrants(new ManualClock());
    const h = g.grant(spec);
    expect(h.used).toBe(false);
    expect(g.take(usb)).toEqual({ ...spec, user: "root" });
    expect(h.used).toBe(true);
    expect(g.take(usb)).toBeUndefined();
    expect(g.size).toBe(0);
  });

  it.each([
    ["another source", { source: "vault" }],
    ["the backend calling itself", { source: "sys-usb" }],
    ["another bus id", { argument: "2-2" }],
    ["a bus id with more after it", { argument: "2-1.1" }],
    ["no argument", { argument: "" }],
    ["another service", { service: "qubes.USBAttach" }],
    ["a service differing in case", { service: "qubes.usb" }],
    ["another target", { target: "sys-net" }],
    ["@default instead of the name", { target: "@default" }],
    ["an empty target", { target: "" }],
    ["a disposable", { target: "@dispvm:sys-usb" }],
  ])("is not used by %s, and stays for the call it names", (_what, other) => {
    const g = new QrexecGrants(new ManualClock());
    g.grant(spec);
    expect(g.take({ ...usb, ...other })).toBeUndefined();
    expect(g.take(usb)).toBeDefined();
  });

  it(`lapses after its time to live (${DEFAULT_GRANT_TTL_MS / 1000} s by default)`, () => {
    const clock = new ManualClock();
    const g = new QrexecGrants(clock);
    const h = g.grant(spec);
    clock.t += DEFAULT_GRANT_TTL_MS - 1;
    expect(g.size).toBe(1);
    clock.t += 1;
    expect(g.take(usb)).toBeUndefined();
    expect(h.used).toBe(false);
    expect(g.size).toBe(0);
    const short = new QrexecGrants(clock, 10);
    short.grant(spec);
    clock.t += 10;
    expect(short.take(usb)).toBeUndefined();
  });

  it("is gone once revoked; revoking after use or twice does nothing", () => {
    const g = new QrexecGrants(new ManualClock());
    const h = g.grant(spec);
    h.revoke();
    expect(g.take(usb)).toBeUndefined();
    h.revoke();
    const h2 = g.grant(spec);
    expect(g.take(usb)).toBeDefined();
    h2.revoke();
    expect(h2.used).toBe(true);
  });

  it("two grants for the same call are two calls; each is consumed by one", () => {
    const g = new QrexecGrants(new ManualClock());
    g.grant(spec);
    g.grant(spec);
    expect(g.take(usb)).toBeDefined();
    expect(g.take(usb)).toBeDefined();
    expect(g.take(usb)).toBeUndefined();
  });

  it(`holds at most ${MAX_GRANTS}; a grant the caller changes afterwards is not changed`, () => {
    const g = new QrexecGrants(new ManualClock());
    const mine = { ...spec };
    g.grant(mine);
    mine.source = "vault";
    expect(g.take({ ...usb, source: "vault" })).toBeUndefined();
    for (let i = 1; i < MAX_GRANTS; i++) g.grant({ ...spec, argument: `1-${i}` });
    expect(() => g.grant(spec)).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
  });

  it("is never written anywhere: the policy directory is byte for byte the same with grants held and used", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-grants-"));
    try {
      installDefaultPolicy(dir);
      const snapshot = () => readdirSync(dir).map((f) => [f, readFileSync(path.join(dir, f), "utf8")]);
      const before = snapshot();
      const g = new QrexecGrants(new ManualClock());
      g.grant(spec);
      g.take(usb);
      g.grant({ ...spec, argument: "2-2" });
      expect(snapshot()).toEqual(before);
      expect(JSON.stringify(before)).not.toContain("2-1");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
