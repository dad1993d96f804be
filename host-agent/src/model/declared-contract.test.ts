// The declared-domains file (`qvm apply`, protocol/src/contracts/declared.ts) repeats qvmd's
// property table, tag and feature rules, because the CLI that checks a file may not import
// host-agent. This fails when the two part: a property added, removed, retyped or rebounded here
// must be changed there too.
import { describe, expect, it } from "vitest";
import { DECLARED_PROPERTIES, FEATURE_NAME_PATTERN, MAX_FEATURE_VALUE, MAX_FEATURES, MAX_TAGS, TAG_PATTERN, type DeclaredPropertyType } from "@qvm/protocol/declared";
import { PROPERTIES } from "./properties.js";
import * as tagsFeatures from "./tags-features.js";

/** How each of qvmd's property types is written in a declared file. */
const FILE_TYPE: Record<string, DeclaredPropertyType> = { int: "int", bool: "bool", str: "text", domain: "domain", vmm: "vmm", mac: "mac", uplink: "uplink" };

describe("the declared file's property table", () => {
  // label and template are fields of their own; computed properties cannot be set; encrypted
  // (createOnly) needs a passphrase at creation, which a declared file must not hold.
  const settable = Object.entries(PROPERTIES).filter(([name, def]) => !def.computed && !def.createOnly && name !== "label" && name !== "template");

  it("has every property qvmd lets one set, and no other", () => {
    expect(Object.keys(DECLARED_PROPERTIES).sort()).toEqual(settable.map(([name]) => name).sort());
  });

  it.each(settable)("%s has qvmd's type, bounds and classes", (name, def) => {
    const declared = DECLARED_PROPERTIES[name as keyof typeof DECLARED_PROPERTIES] as { type: string; min?: number; max?: number; classes?: readonly string[] };
    expect(declared.type).toBe(FILE_TYPE[def.type]);
    expect([declared.min, declared.max]).toEqual([def.min, def.max]);
    expect(declared.classes).toEqual(def.classes);
  });
});

describe("the declared file's tags and features", () => {
  const samples = ["a", "work", "x".repeat(64), "x".repeat(65), "a b", "a.b", "a:b", "a-b_c", "", "é", "a/b", "A9"];

  it.each(samples)("tag %j: the same answer as qvmd", (t) => {
    expect(TAG_PATTERN.test(t)).toBe(isOk(() => tagsFeatures.validateTag(t)));
  });

  it.each(samples)("feature name %j: the same answer as qvmd", (f) => {
    expect(FEATURE_NAME_PATTERN.test(f)).toBe(isOk(() => tagsFeatures.validateFeature(f)));
  });

  it("has qvmd's bounds", () => {
    expect([MAX_FEATURE_VALUE, MAX_TAGS, MAX_FEATURES]).toEqual([tagsFeatures.MAX_FEATURE_VALUE, tagsFeatures.MAX_TAGS, tagsFeatures.MAX_FEATURES]);
  });
});

function isOk(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}
