import { describe, expect, it } from "vitest";
import { DOMAIN_NAME_PATTERN, isDomainNameShaped, validateDomainName } from "./names.js";

describe("domain names (Qubes' rules)", () => {
  it.each(["work", "sys-net", "a", "Vault_2", "disp1234", "a.b-c_d", "x".repeat(31)])("accepts %s", (n) => {
    expect(validateDomainName(n)).toBe(n);
    expect(isDomainNameShaped(n)).toBe(true);
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

  it("gives the shape alone to those who must name reserved domains (a policy naming dom0)", () => {
    expect(isDomainNameShaped("dom0")).toBe(true);
    for (const bad of ["", "x".repeat(32), "1a", "a\n", "a b", 7, undefined]) expect(isDomainNameShaped(bad)).toBe(false);
  });

  it("the pattern and the full rule agree on length and characters", () => {
    for (const n of ["a", "x".repeat(31), "x".repeat(32), "a.b", "a+b", "_a"]) {
      let valid = true;
      try {
        validateDomainName(n);
      } catch {
        valid = false;
      }
      expect(DOMAIN_NAME_PATTERN.test(n)).toBe(valid);
    }
  });
});
