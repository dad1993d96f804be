// `qvm usb`'s own guard on device text (a backend reports it; qvmd escapes it; the CLI escapes
// it again and clips it to the column) and its device-name check, without a qvmd.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { adminV1 } from "@qvm/protocol";
import { DESCRIPTION_WIDTH, deviceText, formatUsbTable, parseDevice, safeJson } from "./usb.js";

/** What a terminal could act on: C0 but newline, DEL, C1, format characters (bidi, zero width), separators, lone surrogates. */
const UNSAFE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;

describe("deviceText", () => {
  it("escapes what a terminal acts on, as \\uXXXX", () => {
    expect(deviceText("a\x1b[2Jb\x07\u009b\u202e\u200b")).toBe("a\\u001b[2Jb\\u0007\\u009b\\u202e\\u200b");
    expect(deviceText("SanDisk Cruzer Blade")).toBe("SanDisk Cruzer Blade");
    expect(deviceText("Ünïcödé 日本")).toBe("Ünïcödé 日本");
  });

  it("clips to the width with an ellipsis, never inside an escape", () => {
    expect(deviceText("x".repeat(DESCRIPTION_WIDTH))).toBe("x".repeat(DESCRIPTION_WIDTH));
    expect(deviceText("x".repeat(DESCRIPTION_WIDTH + 1))).toBe(`${"x".repeat(DESCRIPTION_WIDTH - 1)}…`);
    expect(deviceText("abcd\x1befgh", 8)).toBe("abcd…");
    expect(deviceText("ab\x1bcdefghij", 10)).toBe("ab\\u001bc…");
    expect(deviceText("ab\x1bcdefghij", 8)).toBe("ab…");
  });

  it("for any text: no unsafe character, at most the width", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), fc.integer({ min: 8, max: 80 }), (text, width) => {
        const out = deviceText(text, width);
        expect(out).not.toMatch(UNSAFE);
        expect(out.length).toBeLessThanOrEqual(width);
      }),
    );
  });
});

describe("safeJson", () => {
  it("is the same value, parsed, with nothing unsafe in the text", () => {
    fc.assert(
      fc.property(fc.array(fc.record({ description: fc.string({ unit: "binary" }), n: fc.integer() }), { maxLength: 4 }), (value) => {
        const text = safeJson(value);
        expect(text).not.toMatch(UNSAFE);
        expect(JSON.parse(text)).toEqual(value);
      }),
    );
  });
});

describe("formatUsbTable", () => {
  const dev = (o: Partial<adminV1.UsbDevice>): adminV1.UsbDevice => ({
    backend: "sys-usb",
    busid: "2-1",
    vendorId: "0951",
    productId: "1666",
    description: "Kingston DataTraveler 3.0",
    serial: "",
    kinds: ["storage"],
    attachedTo: "",
    persistent: false,
    present: true,
    ...o,
  });

  it("marks persistent assignments and devices not present; a not-present one keeps its description when qvmd has one", () => {
    expect(
      formatUsbTable([
        dev({ attachedTo: "work", persistent: true }),
        dev({ busid: "3-1", present: false, vendorId: "", productId: "", description: "", attachedTo: "vault", persistent: true }),
        dev({ busid: "3-2", present: false, description: "Old stick", attachedTo: "vault", persistent: true }),
        dev({ busid: "4-1", description: "" }),
      ]),
    ).toBe(
      [
        "BACKEND:BUSID  VID:PID    DESCRIPTION                USED BY",
        "sys-usb:2-1    0951:1666  Kingston DataTraveler 3.0  work (persistent)",
        "sys-usb:3-1    -          (not present)              vault (persistent)",
        "sys-usb:3-2    0951:1666  (not present) Old stick    vault (persistent)",
        "sys-usb:4-1    0951:1666  -                          -",
        "",
      ].join("\n"),
    );
  });

  it("escapes every column qvmd sends, not only the description", () => {
    const out = formatUsbTable([dev({ vendorId: "\x1b[2J", productId: "16\u009b6", attachedTo: "w\x07" })]);
    expect(out).not.toMatch(UNSAFE);
    // Vendor and product ids are 4 hex digits (qvmd checks them): anything longer is clipped.
    expect(out.split("\n")[1]).toBe("sys-usb:2-1    …:16…    Kingston DataTraveler 3.0  w\\u0007");
  });
});

describe("parseDevice", () => {
  it("takes BACKEND:BUSID as qvm usb lists it", () => {
    expect(parseDevice("sys-usb:2-1")).toEqual({ backend: "sys-usb", busid: "2-1" });
    expect(parseDevice("sys-usb:1-1.4.2")).toEqual({ backend: "sys-usb", busid: "1-1.4.2" });
  });

  it.each(["sys-usb", "2-1", "sys-usb:", ":2-1", "sys-usb:2-1:1.0", "sys-usb+2-1", "sys-usb:2_1", "sys-usb:0-1", "-x:2-1", "a/b:2-1", "sys usb:2-1"])("refuses %j naming the form", (text) => {
    expect(() => parseDevice(text)).toThrow(/is not a USB device.*BACKEND:BUSID \(sys-usb:2-1\)/);
  });
});
