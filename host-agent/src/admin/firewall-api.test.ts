// The firewall calls of the admin API against a real qvmd process (no VMs): GetFirewall,
// SetFirewall (all or nothing, strictly ASCII, bounded) and ReloadFirewall, each change stored
// across a restart and announced with firewall-changed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, eventTypeWord } from "@qvm/protocol";
import { MAX_FIREWALL_LINE_BYTES, MAX_FIREWALL_RULES } from "@qvm/protocol/contracts";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";

let d: TestDaemon;
beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("firewall-api"));
  for (const name of ["work", "vault"]) {
    await d.client.createDomain({ name, class: adminV1.DomainClass.DOMAIN_CLASS_STANDALONE_VM, template: "", label: "red", properties: {} });
  }
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

const get = async (domain: string) => (await d.client.getFirewall({ domain })).rules;
const set = (domain: string, rules: string[]) => d.client.setFirewall({ domain, rules });

/** The firewall-changed events `during` causes, as [domain, reason]. */
async function firewallEvents(during: () => Promise<unknown>): Promise<Array<[string, string]>> {
  const stream = d.client.watchEvents({ domain: "" });
  const seen: adminV1.Event[] = [];
  stream.on("data", (e: adminV1.Event) => seen.push(e));
  stream.on("error", () => {});
  await new Promise((r) => setTimeout(r, 100)); // the subscription is live once the call is up
  await during().catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  stream.cancel();
  return seen.filter((e) => eventTypeWord(e.type) === "firewall-changed").map((e) => [e.domain, e.fields.reason ?? ""]);
}

describe("the firewall admin calls", () => {
  it("a domain starts with Qubes' default rule", async () => {
    expect(await get("work")).toEqual(["action=accept"]);
  });

  it("sets rules in the API's canonical form, announces them, and keeps them across a restart", async () => {
    const events = await firewallEvents(() =>
      set("work", ["action=drop dst4=192.168.0.0/16", "action=accept dsthost=example.com proto=tcp dstports=443", "action=accept specialtarget=dns comment=name service", "action=drop"]),
    );
    expect(events).toEqual([["work", "set"]]);
    const expected = ["action=drop dst4=192.168.0.0/16", "action=accept dsthost=example.com proto=tcp dstports=443-443", "action=accept specialtarget=dns comment=name service", "action=drop"];
    expect(await get("work")).toEqual(expected);
    expect(await get("vault")).toEqual(["action=accept"]);
    expect(await d.stop()).toBe(0);
    d = await startTestDaemon(d.dirs);
    expect(await get("work")).toEqual(expected);
  });

  it("refuses a bad rule, naming its number and element, and changes nothing", async () => {
    const before = await get("work");
    const cases: Array<[string[], string, RegExp]> = [
      [["action=accept", "action=accept dstports=80"], "INVALID_ARGUMENT", /^firewall rule 2 of 2: dstports "80": only with proto=tcp or proto=udp; nothing was changed$/],
      [["action=allow"], "INVALID_ARGUMENT", /^firewall rule 1 of 1: action "allow": must be accept or drop/],
      [["proto=tcp"], "INVALID_ARGUMENT", /^firewall rule 1 of 1: action is required/],
      [["action=accept colour=red"], "INVALID_ARGUMENT", /unknown firewall rule element "colour"/],
      [["action=accept proto=tcp proto=udp"], "INVALID_ARGUMENT", /proto: given twice/],
      [["action=accept dsthost=Example.com"], "INVALID_ARGUMENT", /dsthost "Example.com": a host name may contain only lowercase/],
      [["action=accept", "action=accept comment=caf\u00e9"], "INVALID_ARGUMENT", /^firewall rule 2: character U\+00e9 at position 22: a rule is printable ASCII only$/],
      [["action=accept\ncomment=x"], "INVALID_ARGUMENT", /character U\+000a/],
      [["action=accept comment=" + "x".repeat(MAX_FIREWALL_LINE_BYTES)], "RESOURCE_EXHAUSTED", new RegExp(`longer than ${MAX_FIREWALL_LINE_BYTES} bytes`)],
      [Array.from({ length: MAX_FIREWALL_RULES + 1 }, () => "action=accept"), "RESOURCE_EXHAUSTED", new RegExp(`at most ${MAX_FIREWALL_RULES} per domain`)],
    ];
    const events = await firewallEvents(async () => {
      for (const [rules, code, message] of cases) {
        await expect(set("work", rules)).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
      }
    });
    expect(events).toEqual([]);
    expect(await get("work")).toEqual(before);
    await expect(set("nope", ["action=accept"])).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(set("../x", ["action=accept"])).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(get("nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("takes an empty list (everything dropped), leaves expired rules out, and reloads", async () => {
    await set("vault", []);
    expect(await get("vault")).toEqual([]);
    const now = Math.floor(Date.now() / 1000);
    await set("vault", [`action=accept expire=${now - 10} proto=tcp`, `action=accept expire=${now + 3600} proto=udp`, "action=drop"]);
    expect(await get("vault")).toEqual([`action=accept expire=${now + 3600} proto=udp`, "action=drop"]);
    expect(await firewallEvents(() => d.client.reloadFirewall({ domain: "vault" }))).toEqual([["vault", "reload"]]);
    await expect(d.client.reloadFirewall({ domain: "nope" })).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("announces a rule's expiry when it passes", async () => {
    const soon = Math.floor(Date.now() / 1000) + 2;
    const events = await firewallEvents(async () => {
      await set("work", [`action=accept expire=${soon} proto=tcp`, "action=drop"]);
      await new Promise((r) => setTimeout(r, soon * 1000 - Date.now() + 300));
    });
    expect(events).toEqual([
      ["work", "set"],
      ["work", "expired"],
    ]);
    expect(await get("work")).toEqual(["action=drop"]);
  });
});
