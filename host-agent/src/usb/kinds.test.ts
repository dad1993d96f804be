// What a device is, from its interfaces, and whether the input policy lets it go to a domain.
import { describe, expect, it } from "vitest";
import type { DomainFacts, SystemFacts } from "../qrexec/policy/evaluate.js";
import { parsePolicy, type PolicyRule } from "../qrexec/policy/parser.js";
import { inputAllowed } from "./input-policy.js";
import { usbKinds } from "./kinds.js";

const i = (cls: number, subclass = 0, protocol = 0) => ({ class: cls, subclass, protocol });

describe("USB device kinds", () => {
  it.each([
    ["a stick", 0, [i(8, 6, 80)], ["storage"]],
    ["a boot keyboard", 0, [i(3, 1, 1)], ["keyboard"]],
    ["a boot mouse", 0, [i(3, 1, 2)], ["mouse"]],
    ["a tablet (HID, no boot protocol)", 0, [i(3, 0, 0)], ["tablet"]],
    ["a security key (any other HID interface)", 0, [i(3, 0, 0)], ["tablet"]],
    ["a keyboard with a touchpad", 0, [i(3, 1, 1), i(3, 0, 0)], ["keyboard", "tablet"]],
    ["a hub by its device class", 9, [], ["hub"]],
    ["a hub by its interface", 0, [i(9)], ["hub"]],
    ["a card reader with a keyboard", 0, [i(8, 6, 80), i(3, 1, 1)], ["storage", "keyboard"]],
    ["a webcam", 0xef, [i(14, 1), i(14, 2)], ["other"]],
    ["a device without interfaces", 0, [], ["other"]],
  ])("%s", (_what, deviceClass, interfaces, kinds) => {
    expect(usbKinds({ deviceClass, interfaces })).toEqual(kinds);
  });
});

describe("the input policy for attaching", () => {
  const dom = (name: string, more: Partial<DomainFacts> = {}): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "", ...more });
  const system: SystemFacts = { domains: new Map([dom("sys-usb"), dom("work"), dom("vault"), dom("disp1", { class: "DispVM", template: "dvm" }), dom("dvm", { templateForDispvms: true })].map((d) => [d.name, d])) };
  const rules = (text: string) => parsePolicy(text, "t.policy") as PolicyRule[];
  const allowed = (text: string, target: string, service = "qubes.InputMouse") => inputAllowed(rules(text), system, service, "sys-usb", target);

  it("allow and ask attach; deny, no rule, and a rule sending it elsewhere refuse, naming the rule", () => {
    expect(allowed("qubes.InputMouse * sys-usb work allow\n", "work")).toEqual({ allowed: true });
    expect(allowed("qubes.InputMouse * sys-usb @anyvm ask\n", "work")).toEqual({ allowed: true });
    expect(allowed("qubes.InputMouse * sys-usb @anyvm ask\n", "disp1")).toEqual({ allowed: true });
    expect(allowed("qubes.InputMouse * sys-usb work deny\n", "work")).toEqual({ allowed: false, reason: "the policy denies it", where: "t.policy:1" });
    expect(allowed("", "work")).toMatchObject({ allowed: false, reason: "no rule matches (a call no rule names is denied)", where: "" });
    expect(allowed("qubes.InputMouse * sys-usb @anyvm allow target=vault\n", "work")).toMatchObject({ allowed: false, reason: "the policy sends it to vault" });
    expect(allowed("qubes.InputMouse * sys-usb @anyvm ask target=vault\n", "work")).toMatchObject({ allowed: false, reason: "work is not among the targets the ask offers" });
    // The service matters: a mouse rule does not allow a keyboard.
    expect(allowed("qubes.InputMouse * sys-usb work allow\n", "work", "qubes.InputKeyboard")).toMatchObject({ allowed: false });
  });
});
