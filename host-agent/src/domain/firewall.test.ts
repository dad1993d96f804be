// A domain's firewall rules in the registry (stored with the record, all or nothing, announced
// after they are stored) and the expiry timers that announce them again, with a fake clock.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_FIREWALL_RULES, parseRuleApi, type FirewallRule } from "@qvm/protocol/contracts";
import type { Clock } from "../base/clock.js";
import { EventBus, type QvmEvent } from "../base/events.js";
import { DomainStore, STORE_FILE } from "../store/domain-store.js";
import { FirewallExpiry, type Timers } from "./firewall-expiry.js";
import { DomainRegistry } from "./registry.js";

/** A clock and timers that move only when told to. */
class FakeTime implements Clock, Timers {
  t = Date.UTC(2026, 10, 30);
  private timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  now = () => this.t;
  sleep = async (ms: number) => void (this.t += ms);
  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return () => void (timer.live = false);
  }
  /** Moves time on by `ms`, firing each timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.live = false;
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
  get live(): number {
    return this.timers.filter((x) => x.live).length;
  }
}

let dir: string;
let time: FakeTime;
let events: EventBus;
let seen: QvmEvent[];
let registry: DomainRegistry;
let expiry: FirewallExpiry;

const rules = (...lines: string[]): FirewallRule[] => lines.map((l) => parseRuleApi(l));
const nowS = () => Math.floor(time.t / 1000);
const firewallEvents = () => seen.filter((e) => e.type === "firewall-changed").map((e) => [e.domain, e.fields.reason]);

function open(): DomainRegistry {
  return new DomainRegistry(DomainStore.open(dir), events, () => false, time);
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-firewall-"));
  time = new FakeTime();
  events = new EventBus(time);
  seen = [];
  events.subscribe((e) => seen.push(e));
  registry = open();
  for (const name of ["work", "vault"]) registry.add(registry.prepareCreate({ name, klass: "StandaloneVM", label: "red" }));
  expiry = new FirewallExpiry({ events, clock: time, timers: time, nextExpiry: (n) => registry.firewallExpiry(n), domains: () => registry.list().map((r) => r.name) });
  expiry.start();
  seen = [];
});

afterEach(() => {
  expiry.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the registry's firewall", () => {
  it("has Qubes' default, one rule accepting everything, until rules are set", () => {
    expect(registry.firewall("work")).toEqual([{ action: "accept" }]);
    expect(registry.get("work").firewall).toBeUndefined();
  });

  it("stores the rules with the record before it announces them, and keeps them across a restart", () => {
    let onDisk: unknown;
    events.subscribe((e) => {
      if (e.type === "firewall-changed") onDisk = JSON.parse(readFileSync(path.join(dir, STORE_FILE), "utf8")).body.domains.work.firewall;
    });
    const set = rules("action=drop dst4=192.168.0.0/16", "action=accept dsthost=example.com proto=tcp dstports=443-443 comment=web, only");
    registry.setFirewall("work", set);
    const lines = ["action=drop dst4=192.168.0.0/16", "action=accept dsthost=example.com proto=tcp dstports=443-443 comment=web, only"];
    expect(onDisk).toEqual(lines);
    expect(firewallEvents()).toEqual([["work", "set"]]);
    expect(registry.firewall("work")).toEqual(set);
    expect(registry.firewall("vault")).toEqual([{ action: "accept" }]);
    expect(open().firewall("work")).toEqual(set);
  });

  it("takes an empty list (everything dropped)", () => {
    registry.setFirewall("work", []);
    expect(registry.firewall("work")).toEqual([]);
    expect(open().get("work").firewall).toEqual([]);
  });

  it("changes nothing and announces nothing when a rule cannot be stored, or there are too many", () => {
    registry.setFirewall("work", rules("action=drop proto=udp"));
    seen = [];
    // A rule built in code that no line can say: dstports without tcp or udp.
    const bad: FirewallRule[] = [{ action: "accept" }, { action: "accept", dstports: [80, 80] }];
    expect(() => registry.setFirewall("work", bad)).toThrow(/dstports/);
    const many = Array.from({ length: MAX_FIREWALL_RULES + 1 }, (): FirewallRule => ({ action: "accept" }));
    expect(() => registry.setFirewall("work", many)).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    expect(() => registry.setFirewall("nope", [])).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
    expect(registry.firewall("work")).toEqual(rules("action=drop proto=udp"));
    expect(open().firewall("work")).toEqual(rules("action=drop proto=udp"));
    expect(seen).toEqual([]);
  });

  it("reload announces the same rules again", () => {
    registry.reloadFirewall("vault");
    expect(firewallEvents()).toEqual([["vault", "reload"]]);
    expect(() => registry.reloadFirewall("nope")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
  });

  it("leaves expired rules out, and knows the next expiry", () => {
    registry.setFirewall("work", rules(`action=accept expire=${nowS() - 1} proto=tcp`, "action=accept proto=udp", `action=drop expire=${nowS() + 60}`, `action=drop expire=${nowS() + 30}`));
    expect(registry.firewall("work")).toEqual(rules("action=accept proto=udp", `action=drop expire=${nowS() + 60}`, `action=drop expire=${nowS() + 30}`));
    expect(registry.firewallExpiry("work")).toBe(nowS() + 30);
    expect(registry.firewallExpiry("vault")).toBeUndefined();
    expect(registry.firewallExpiry("gone")).toBeUndefined();
  });

  it("a clone keeps its source's rules", () => {
    registry.setFirewall("work", rules("action=drop"));
    registry.add(registry.prepareClone("work", "work2"));
    expect(registry.firewall("work2")).toEqual(rules("action=drop"));
  });

  it("refuses a store whose firewall holds a line that is not a rule, naming where", () => {
    registry.setFirewall("work", rules("action=drop"));
    const file = path.join(dir, STORE_FILE);
    const stored = JSON.parse(readFileSync(file, "utf8"));
    stored.body.domains.work.firewall = ["action=drop", "action=maybe"];
    stored.checksum = createHash("sha256").update(JSON.stringify(stored.body)).digest("hex");
    writeFileSync(file, JSON.stringify(stored));
    expect(() => DomainStore.open(dir)).toThrow(/schema at body\.domains\.work\.firewall\.1: not a firewall rule: action "maybe": must be accept or drop/);
  });
});

describe("firewall expiry", () => {
  it("announces a domain's rules again when each expiry passes, until none is left", () => {
    const t0 = nowS();
    registry.setFirewall("work", rules(`action=accept expire=${t0 + 60} proto=tcp`, `action=accept expire=${t0 + 120} proto=udp`, "action=drop"));
    expect(expiry.scheduledAt("work")).toBe((t0 + 60) * 1000);
    seen = [];
    time.advance(59_999);
    expect(seen).toEqual([]);
    time.advance(1);
    expect(firewallEvents()).toEqual([["work", "expired"]]);
    expect(registry.firewall("work")).toEqual(rules(`action=accept expire=${t0 + 120} proto=udp`, "action=drop"));
    expect(expiry.scheduledAt("work")).toBe((t0 + 120) * 1000);
    time.advance(60_000);
    expect(firewallEvents()).toEqual([
      ["work", "expired"],
      ["work", "expired"],
    ]);
    expect(registry.firewall("work")).toEqual(rules("action=drop"));
    expect(expiry.scheduledAt("work")).toBeUndefined();
    expect(time.live).toBe(0);
  });

  it("reschedules when the rules change, and stops for a removed domain", () => {
    registry.setFirewall("work", rules(`action=accept expire=${nowS() + 60}`));
    registry.setFirewall("work", rules(`action=accept expire=${nowS() + 10}`));
    expect(expiry.scheduledAt("work")).toBe((nowS() + 10) * 1000);
    registry.setFirewall("work", rules("action=accept"));
    expect(expiry.scheduledAt("work")).toBeUndefined();
    registry.setFirewall("vault", rules(`action=accept expire=${nowS() + 10}`));
    registry.remove("vault");
    expect(expiry.scheduledAt("vault")).toBeUndefined();
    seen = [];
    time.advance(3600_000);
    expect(firewallEvents()).toEqual([]);
    expect(time.live).toBe(0);
  });

  it("schedules the stored rules at start, and waits for a far expiry in steps", () => {
    const far = nowS() + 40 * 86_400; // beyond setTimeout's 24.8 days
    registry.setFirewall("work", rules(`action=drop expire=${far}`));
    expiry.close();
    expect(time.live).toBe(0);
    const again = new FirewallExpiry({ events, clock: time, timers: time, nextExpiry: (n) => registry.firewallExpiry(n), domains: () => registry.list().map((r) => r.name) });
    again.start();
    expect(again.scheduledAt("work")).toBe(far * 1000);
    seen = [];
    time.advance(30 * 86_400_000);
    expect(seen).toEqual([]);
    expect(again.scheduledAt("work")).toBe(far * 1000);
    time.advance(10 * 86_400_000);
    expect(firewallEvents()).toEqual([["work", "expired"]]);
    again.close();
  });
});
