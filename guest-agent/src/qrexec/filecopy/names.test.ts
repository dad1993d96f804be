// Unit tests for the name and symlink-target rules (the stream tests cover them end to end).
import { describe, expect, it } from "vitest";
import { FilecopyError } from "./errors.js";
import { validateLinkTarget, validateName } from "./names.js";
import { quoteText, unsafeCharacter } from "./text.js";

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
    ["a b/ü/x", "OK"],
    ["日本語/Ελληνικά/кириллица/עברית/😀/e\u0301", "OK"],
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

  it("refuses invalid UTF-8", () => {
    expect(code(() => validateName(Buffer.from([0xc3, 0x28])))).toBe("BAD_NAME");
  });

  // Hostile names (audit finding 12): anything that can rewrite a terminal or hide what a name
  // says. Each is refused alone, inside a name and in a deeper component.
  const hostile: [string, string, string][] = [
    ["ESC (OSC title, clear screen)", "\x1b]0;owned\x07\x1b[2J.txt", "U+001B"],
    ["newline", "two\nlines.txt", "U+000A"],
    ["carriage return", "a\rb", "U+000D"],
    ["tab", "a\tb", "U+0009"],
    ["BEL", "a\x07", "U+0007"],
    ["DEL", "a\x7fb", "U+007F"],
    ["C1 CSI U+009B", "a\u009b31mred", "U+009B"],
    ["C1 NEL U+0085", "a\u0085b", "U+0085"],
    ["right-to-left override U+202E", "invoice\u202Efdp.exe", "U+202E"],
    ["left-to-right embedding U+202A", "a\u202Ab", "U+202A"],
    ["right-to-left isolate U+2067", "a\u2067b", "U+2067"],
    ["pop directional isolate U+2069", "a\u2069b", "U+2069"],
    ["right-to-left mark U+200F", "a\u200Fb", "U+200F"],
    ["Arabic letter mark U+061C", "a\u061Cb", "U+061C"],
    ["zero-width space U+200B", "pay\u200Bpal", "U+200B"],
    ["zero-width joiner U+200D", "a\u200Db", "U+200D"],
    ["word joiner U+2060", "a\u2060b", "U+2060"],
    ["byte-order mark U+FEFF", "\uFEFFa", "U+FEFF"],
    ["soft hyphen U+00AD", "a\u00ADb", "U+00AD"],
    ["tag character U+E0041", "a\u{E0041}", "U+E0041"],
    ["line separator U+2028", "a\u2028b", "U+2028"],
    ["paragraph separator U+2029", "a\u2029b", "U+2029"],
    ["no-break space U+00A0", "file.txt\u00A0.exe", "U+00A0"],
    ["ideographic space U+3000", "a\u3000b", "U+3000"],
    ["private use U+E000", "a\uE000", "U+E000"],
    ["unassigned U+0378", "a\u0378", "U+0378"],
    ["noncharacter U+FFFF", "a\uFFFF", "U+FFFF"],
  ];
  it.each(hostile)("refuses %s", (_what, name, shown) => {
    for (const n of [name, `dir/${name}`, `${name}/x`]) {
      const err = (() => {
        try {
          validateName(Buffer.from(n));
        } catch (e) {
          return e as FilecopyError;
        }
        throw new Error(`${JSON.stringify(n)} was accepted`);
      })();
      expect(err).toBeInstanceOf(FilecopyError);
      expect(err.code).toBe("BAD_NAME");
      expect(err.message).toContain(shown);
      // The message quotes the name: no raw control or bidi character reaches a log or terminal.
      expect(err.message).not.toMatch(/[\x00-\x1f\x7f-\x9f\u202a-\u202e]/);
    }
  });

  it("refuses every C0 control, DEL and every C1 control, and accepts every other ASCII character", () => {
    for (let c = 0; c < 0xa0; c++) {
      const ch = String.fromCodePoint(c);
      const want = c >= 0x20 && c < 0x7f ? (ch === "/" || ch === "." ? "skip" : "OK") : "BAD_NAME";
      if (want === "skip") continue;
      expect(code(() => validateName(Buffer.from(`a${ch}b`))), `U+${c.toString(16)}`).toBe(want);
    }
  });

  it("unsafeCharacter names the first unsafe character; quoteText escapes all of them", () => {
    expect(unsafeCharacter("fine name.txt")).toBeUndefined();
    expect(unsafeCharacter("a\u202Eb\x1b")).toBe("U+202E");
    expect(quoteText("a\u202Eb\x1b\u009b\u{E0041}é 日")).toBe('"a\\u202eb\\u001b\\u009b\\udb40\\udc41é 日"');
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
    ["top/link", "a\x1b[2Jb", "BAD_SYMLINK"],
    ["top/link", "a\nb", "BAD_SYMLINK"],
    ["top/link", "x\u202Etxt", "BAD_SYMLINK"],
    ["top/link", "x\u200B", "BAD_SYMLINK"],
    ["top/link", "x\u009b", "BAD_SYMLINK"],
  ])("%s → %j: %s", (name, target, want) => {
    expect(code(() => validateLinkTarget(name, Buffer.from(target)))).toBe(want);
  });
});
