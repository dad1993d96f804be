// The shipped policy for the global clipboard, as Qubes' 90-default-gui-daemon.policy has it:
// the user's desktop (@adminvm) and every domain may paste into any domain, on the keystroke (ask).
import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY } from "./default-policy.js";
import { evaluate, type DomainFacts, type SystemFacts } from "./evaluate.js";
import { parsePolicy, type PolicyRule } from "./parser.js";

const dom = (name: string): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "" });
const system: SystemFacts = { domains: new Map(["work", "vault"].map((n) => [n, dom(n)])) };
const rules = parsePolicy(DEFAULT_POLICY, "90-default.policy") as PolicyRule[];
const paste = (source: string, target: string) => evaluate(rules, { service: "qubes.ClipboardPaste", argument: "", source, target }, system);

describe("the default policy for qubes.ClipboardPaste", () => {
  it("has @adminvm's rule before the @anyvm one, both ask", () => {
    const lines = DEFAULT_POLICY.split("\n").filter((l) => l.startsWith("qubes.ClipboardPaste"));
    expect(lines.map((l) => l.split(/\s+/).slice(1))).toEqual([
      ["*", "@adminvm", "@anyvm", "ask"],
      ["*", "@anyvm", "@anyvm", "ask"],
    ]);
  });

  it("asks for a paste from the desktop (dom0) or a domain into another domain, never offering the source", () => {
    expect(paste("dom0", "vault")).toMatchObject({ action: "ask", targets: ["vault", "work"] });
    expect(paste("work", "vault")).toMatchObject({ action: "ask", targets: ["vault"] });
    expect(paste("vault", "vault")).toMatchObject({ action: "ask", targets: ["work"] });
  });
});
