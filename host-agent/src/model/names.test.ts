import { describe, expect, it } from "vitest";
import { validateDomainName } from "./names.js";

describe("domain names (Qubes' rules)", () => {
  it.each(["work", "sys-net", "a", "Vault_2", "disp1234", "a.b-c_d", "x".repeat(31)])("accepts %s", (n) => {
    expect(validateDomainName(n)).toBe(n);
  });

  it.each([
    ["../x", "must start with a letter"],
    ["a/b", "must start with a letter"],
    ["1work", "must start with a letter"],
    ["-x", "must start with a letter"],
    ["wörk", "must start with a letter"],
    ["a b", "must start with a letter"],
    ["x".repeat(40), "longer than 31"],
    ["dom0", "reserved"],
    ["Domain-0", "reserved"],
    ["none", "reserved"],
    ["default", "reserved"],
    ["work-dm", "-dm"],
    ["", "required"],
  ])("refuses %j (%s)", (n, why) => {
    expect(() => validateDomainName(n)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining(why) }));
  });

  it("refuses non-strings", () => expect(() => validateDomainName(42)).toThrow(/required/));
});
