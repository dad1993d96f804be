// Unit tests for the name and symlink-target rules (the stream tests cover them end to end).
import { describe, expect, it } from "vitest";
import { FilecopyError } from "./errors.js";
import { validateLinkTarget, validateName } from "./names.js";

const code = (f: () => unknown) => {
  try {
    f();
    return "OK";
  } catch (e) {
    expect(e).toBeInstanceOf(FilecopyError);
    return (e as FilecopyError).code;
  }
};

describe("validateName", () => {
  it.each([
    ["a", "OK"],
    ["a b/ü/\uFEFFx", "OK"],
    ["x".repeat(255), "OK"],
    [Array(64).fill("a").join("/"), "OK"],
    ["", "BAD_NAME"],
    ["/a", "BAD_NAME"],
    ["a/", "BAD_NAME"],
    ["a//b", "BAD_NAME"],
    ["a/./b", "BAD_NAME"],
    ["a/../b", "BAD_NAME"],
    ["x".repeat(256), "BAD_NAME"],
    [Array(65).fill("a").join("/"), "BAD_NAME"],
    ["a\0", "BAD_NAME"],
  ])("%j → %s", (name, want) => {
    expect(code(() => validateName(Buffer.from(name)))).toBe(want);
  });

  it("keeps a leading byte-order mark and refuses invalid UTF-8", () => {
    expect(validateName(Buffer.from("\uFEFFa"))).toBe("\uFEFFa");
    expect(code(() => validateName(Buffer.from([0xc3, 0x28])))).toBe("BAD_NAME");
  });
});

describe("validateLinkTarget", () => {
  it.each([
    ["top/a/link", "../b", "OK"],
    ["top/a/link", "..", "OK"],
    ["top/a/link", "./b//c/", "OK"],
    ["top/link", "../top/x", "OK"],
    ["top/link", "sub/deeper", "OK"],
    ["top/a/link", "../../x", "SYMLINK_ESCAPE"],
    ["top/link", "../other", "SYMLINK_ESCAPE"],
    ["top/link", "../..", "SYMLINK_ESCAPE"],
    ["top/link", "/abs", "SYMLINK_ESCAPE"],
    ["top/link", "a/../b", "SYMLINK_ESCAPE"],
    ["link", "sub", "SYMLINK_ESCAPE"],
    ["link", ".", "SYMLINK_ESCAPE"],
    ["top/link", "", "BAD_SYMLINK"],
    ["top/link", "a\0", "BAD_SYMLINK"],
    ["top/link", "x".repeat(4097), "BAD_SYMLINK"],
  ])("%s → %j: %s", (name, target, want) => {
    expect(code(() => validateLinkTarget(name, Buffer.from(target)))).toBe(want);
  });
});
