import { describe, expect, it } from "vitest";
import { formatSize, parseSize } from "./sizes.js";

describe("sizes", () => {
  it("parses suffixes and refuses anything else", () => {
    expect(parseSize("4G")).toBe(4 * 1024 ** 3);
    expect(parseSize("512m")).toBe(512 * 1024 ** 2);
    expect(parseSize("1GiB")).toBe(1024 ** 3);
    expect(parseSize("1048576")).toBe(1048576);
    expect(() => parseSize("4 gigs")).toThrow(/size must be a number/);
    expect(() => parseSize("-1G")).toThrow(/size must be a number/);
  });
  it("prints short sizes", () => {
    expect(formatSize(2 * 1024 ** 3)).toBe("2G");
    expect(formatSize(1536 * 1024 ** 2)).toBe("1.5G");
    expect(formatSize(300)).toBe("300");
  });
});
