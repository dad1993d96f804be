import { describe, expect, it } from "vitest";
import { isPciAddress, parsePciAddress, qubesPciName } from "./pci.js";

describe("PCI device names", () => {
  it.each([
    ["0000:00:19.0", "0000:00:19.0"],
    ["00:19.0", "0000:00:19.0"],
    ["0000:03:00.1", "0000:03:00.1"],
    ["0001:3A:1F.7", "0001:3a:1f.7"],
    ["dom0:00_19.0", "0000:00:19.0"],
    ["dom0:00_14.0", "0000:00:14.0"],
    ["dom0:0001_3a_00.0", "0001:3a:00.0"],
    [" 00:19.0\n", "0000:00:19.0"],
  ])("reads %j as %s", (text, bdf) => {
    expect(parsePciAddress(text)).toBe(bdf);
    expect(isPciAddress(bdf)).toBe(true);
  });

  it.each(["", "00:20.0", "00:19.8", "0:19.0", "00:19", "sys-net:00_19.0", "dom0:00:19.0", "0000:00:19.0/../x", "00000:00:19.0", "1-2"])("refuses %j, naming the forms", (text) => {
    expect(() => parsePciAddress(text)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining("(dom0:00_19.0)") }));
  });

  it("gives Qubes' name, keeping a segment other than 0000", () => {
    expect(qubesPciName("0000:00:19.0")).toBe("dom0:00_19.0");
    expect(qubesPciName("0001:3a:00.0")).toBe("dom0:0001_3a_00.0");
    expect(parsePciAddress(qubesPciName("0001:3a:00.0"))).toBe("0001:3a:00.0");
  });

  it("only the canonical form is canonical", () => {
    expect(isPciAddress("00:19.0")).toBe(false);
    expect(isPciAddress("0000:00:19.0 ")).toBe(false);
    expect(isPciAddress("0000:00:1F.0")).toBe(false);
  });
});
