import { parseRuleApi } from "@qvm/protocol/contracts";
import { describe, expect, it } from "vitest";
import { resolveHostNames, withTimeout } from "./resolve.js";

const rules = (...lines: string[]) => lines.map((l) => parseRuleApi(l));

describe("resolveHostNames", () => {
  it("resolves each name once and keeps IPv4 addresses, sorted and unique", async () => {
    const asked: string[] = [];
    const { resolved, failures } = await resolveHostNames(
      new Map([
        ["10.137.0.5", rules("action=accept dsthost=a.example", "action=accept dst4=1.2.3.4")],
        ["10.137.0.6", rules("action=accept dsthost=a.example proto=tcp", "action=drop dsthost=b.example")],
      ]),
      async (name) => {
        asked.push(name);
        return name === "a.example" ? ["10.0.0.2", "10.0.0.1", "10.0.0.2", "::1"] : ["10.9.9.9"];
      },
    );
    expect(asked.sort()).toEqual(["a.example", "b.example"]);
    expect(failures).toEqual({});
    expect(resolved.get("10.137.0.5")).toEqual(new Map([["a.example", ["10.0.0.1", "10.0.0.2"]]]));
    expect(resolved.get("10.137.0.6")?.get("b.example")).toEqual(["10.9.9.9"]);
  });

  it("fails a client whose name does not resolve, resolves to no IPv4 address or takes too long", async () => {
    const { resolved, failures } = await resolveHostNames(
      new Map([
        ["10.137.0.5", rules("action=accept dsthost=missing.example")],
        ["10.137.0.6", rules("action=accept dsthost=v6only.example")],
        ["10.137.0.7", rules("action=accept dsthost=slow.example")],
        ["10.137.0.8", rules("action=accept")],
      ]),
      (name) => {
        if (name === "missing.example") return Promise.reject(new Error("getaddrinfo ENOTFOUND missing.example"));
        if (name === "v6only.example") return Promise.resolve(["2001:db8::1"]);
        return new Promise<string[]>(() => {});
      },
      50,
    );
    expect(failures).toEqual({
      "10.137.0.5": "dsthost missing.example did not resolve: getaddrinfo ENOTFOUND missing.example",
      "10.137.0.6": "dsthost v6only.example did not resolve: no IPv4 address",
      "10.137.0.7": "dsthost slow.example did not resolve: resolving slow.example timed out after 0.05 s",
    });
    expect([...resolved.keys()]).toEqual(["10.137.0.8"]);
  });

  it("survives a resolver that throws synchronously", async () => {
    const { failures } = await resolveHostNames(new Map([["10.137.0.5", rules("action=accept dsthost=x")]]), () => {
      throw new Error("boom");
    });
    expect(failures["10.137.0.5"]).toBe("dsthost x did not resolve: boom");
  });
});

describe("withTimeout", () => {
  it("passes a result through and clears its timer", async () => {
    await expect(withTimeout(Promise.resolve(7), 10_000, "x")).resolves.toBe(7);
  });
});
