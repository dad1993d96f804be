// An ask answered by the person's own action (no prompt): only a target the ask offers, a running
// disposable the rule matched among them, never the source; a rule's target= sends it elsewhere.
import { describe, expect, it } from "vitest";
import { evaluate, type DomainFacts, type SystemFacts } from "./evaluate.js";
import { parsePolicy, type PolicyRule } from "./parser.js";
import { askAllowsWithoutPrompt, offeredWithoutPrompt, type AskDecision } from "./user-action.js";

const dom = (name: string, more: Partial<DomainFacts> = {}): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "", ...more });
const system: SystemFacts = {
  domains: new Map([dom("work"), dom("vault"), dom("personal"), dom("dvm", { templateForDispvms: true }), dom("disp3", { class: "DispVM", template: "dvm" }), dom("disp4", { class: "DispVM", template: "dvm" })].map((d) => [d.name, d])),
};
const ask = (policy: string, source: string, target: string): AskDecision => {
  const d = evaluate(parsePolicy(policy, "t.policy") as PolicyRule[], { service: "s", argument: "", source, target }, system);
  if (d.action !== "ask") throw new Error(`expected an ask, got ${d.action}`);
  return d;
};
const allows = (policy: string, source: string, target: string) => askAllowsWithoutPrompt(ask(policy, source, target), { source, target }, system);

describe("an ask answered without a prompt", () => {
  it.each([
    ["a target the ask offers", "s * work @anyvm ask", "work", "vault", true],
    ["an ask naming the target", "s * work vault ask", "work", "vault", true],
    ["a default_target elsewhere (only preselects)", "s * work @anyvm ask default_target=personal", "work", "vault", true],
    ["a target a deny rule before it keeps out of the offers", "s * work vault deny\ns * work @anyvm ask", "work", "personal", true],
    ["a running disposable, which an ask never offers by name", "s * work @anyvm ask", "work", "disp3", true],
    ["a running disposable from the admin domain", "s * @adminvm @anyvm ask", "dom0", "disp3", true],
    ["an ask whose target= sends it elsewhere", "s * work @anyvm ask target=personal", "work", "vault", false],
    ["a running disposable under target=", "s * work @anyvm ask target=personal", "work", "disp3", false],
    ["a running disposable back into itself", "s * @anyvm @anyvm ask", "disp3", "disp3", false],
  ])("%s: %s from %s to %s -> %s", (_what, policy, source, target, allowed) => {
    expect(allows(policy, source, target)).toBe(allowed);
  });

  it("lists the ask's own targets, adding only the running disposable asked for", () => {
    const plain = ask("s * @anyvm @anyvm ask", "work", "vault");
    expect(offeredWithoutPrompt(plain, { source: "work", target: "vault" }, system)).toBe(plain.targets);
    const d = ask("s * @anyvm @anyvm ask", "work", "disp3");
    const offered = offeredWithoutPrompt(d, { source: "work", target: "disp3" }, system);
    expect(offered).toEqual([...d.targets, "disp3"]);
    expect(offered).not.toContain("disp4");
    expect(offered).not.toContain("work");
  });

  it("never the source: an ask does not offer it, whatever the rule names", () => {
    expect(allows("s * work @anyvm ask", "work", "work")).toBe(false);
    expect(allows("s * work work ask\ns * work @anyvm ask", "work", "work")).toBe(false);
  });
});
