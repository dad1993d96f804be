// The policy files a declared file (`qvm apply`, protocol/src/contracts/declared.ts) may name are
// ones qvmd reads, and qvm's own file is not among them: the CLI writes them without importing
// this loader, so this fails when the two part.
import { describe, expect, it } from "vitest";
import { POLICY_FILE_NAME_PATTERN, RESERVED_POLICY_FILES } from "@qvm/protocol/declared";
import { DEFAULT_POLICY_FILE, USER_POLICY_FILE } from "./default-policy.js";
import { POLICY_FILE_RE } from "./loader.js";

describe("declared policy file names", () => {
  it("are names qvmd's loader reads", () => {
    for (const name of ["30-user.policy", "0.policy", "50-a_b.c-d.policy"]) {
      expect(POLICY_FILE_NAME_PATTERN.test(name)).toBe(true);
      expect(POLICY_FILE_RE.test(name)).toBe(true);
    }
    expect(POLICY_FILE_NAME_PATTERN.test(USER_POLICY_FILE)).toBe(true);
  });

  it("leave out qvm's own file, which qvmd writes again at every start", () => {
    expect(RESERVED_POLICY_FILES).toEqual([DEFAULT_POLICY_FILE]);
  });
});
