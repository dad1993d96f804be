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

describe("the default policy for USB and input devices", () => {
  const usbSystem: SystemFacts = { domains: new Map(["work", "sys-usb"].map((n) => [n, dom(n)])) };
  const decide = (service: string, source: string, target: string, argument = "") => evaluate(rules, { service, argument, source, target }, usbSystem);

  it("denies every qubes.USB call: only a one-shot grant qvmd makes for an attach lets one through", () => {
    for (const [s, t] of [
      ["work", "sys-usb"],
      ["sys-usb", "work"],
      ["work", "@default"],
    ]) {
      expect(decide("qubes.USB", s!, t!, "2-1")).toMatchObject({ action: "deny", reason: "the policy denies it" });
    }
  });

  it("denies keyboards and tablets from a backend, and asks for a mouse", () => {
    expect(decide("qubes.InputKeyboard", "sys-usb", "work")).toMatchObject({ action: "deny" });
    expect(decide("qubes.InputTablet", "sys-usb", "work")).toMatchObject({ action: "deny" });
    expect(decide("qubes.InputMouse", "sys-usb", "work")).toMatchObject({ action: "ask", targets: ["work"] });
  });
});
