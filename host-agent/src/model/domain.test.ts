// The domain record's schema where it bounds what later code trusts: emulated USB plugs (ids,
// kinds, image paths, at most MAX_USB_PLUGS, no repeats).
import { describe, expect, it } from "vitest";
import { MAX_USB_PLUGS } from "@qvm/protocol/contracts";
import { domainRecordSchema, isStorableImagePath, usbPlugId, usbPlugNumber, type DomainRecord } from "./domain.js";

const base: DomainRecord = { name: "sys-usb", class: "StandaloneVM", props: { label: "red" }, features: {}, tags: [], createdAt: "t" };
const withPlugs = (usbPlugs: unknown) => domainRecordSchema.safeParse({ ...base, usbPlugs });
const stick = (id: string, path = "/srv/stick.img", readOnly = false) => ({ id, kind: "disk", path, readOnly });

describe("usbPlugs in the domain record", () => {
  it("takes sticks, keyboards and tablets, and a record without any", () => {
    expect(domainRecordSchema.safeParse(base).success).toBe(true);
    const r = withPlugs([stick("usb1"), { id: "usb2", kind: "keyboard" }, { id: "usb3", kind: "tablet" }, stick("usb4", "/srv/other.img", true)]);
    expect(r.success).toBe(true);
    expect(r.data?.usbPlugs?.map((p) => p.kind)).toEqual(["disk", "keyboard", "tablet", "disk"]);
  });

  it("bounds the list: not empty (absent instead), at most MAX_USB_PLUGS", () => {
    expect(withPlugs([]).success).toBe(false);
    const full = Array.from({ length: MAX_USB_PLUGS }, (_, i) => ({ id: usbPlugId(i + 1), kind: "keyboard" }));
    expect(withPlugs(full).success).toBe(true);
    expect(withPlugs([...full, { id: "usb1", kind: "tablet" }]).success).toBe(false);
  });

  it("takes ids usb1 … usbN only, each once", () => {
    for (const id of ["usb0", "usb", "USB1", "usb01", `usb${MAX_USB_PLUGS + 1}`, "usb1 ", "x"]) expect(withPlugs([{ id, kind: "tablet" }]).success, id).toBe(false);
    expect(withPlugs([{ id: "usb2", kind: "tablet" }, { id: "usb2", kind: "keyboard" }]).success).toBe(false);
    expect(usbPlugNumber("usb8")).toBe(8);
    expect(usbPlugNumber("usb9")).toBeUndefined();
  });

  it("refuses an unknown kind, a stick without its image or access mode, an image on a keyboard, extra fields", () => {
    expect(withPlugs([{ id: "usb1", kind: "mouse" }]).success).toBe(false);
    expect(withPlugs([{ id: "usb1", kind: "disk", path: "/srv/a.img" }]).success).toBe(false);
    expect(withPlugs([{ id: "usb1", kind: "disk", readOnly: false }]).success).toBe(false);
    expect(withPlugs([{ id: "usb1", kind: "keyboard", path: "/srv/a.img" }]).success).toBe(false);
    expect(withPlugs([{ ...stick("usb1"), fd: 3 }]).success).toBe(false);
  });

  it("stores an image as an absolute path in normal form, and one image once", () => {
    for (const p of ["stick.img", "./stick.img", "/srv/../etc/shadow", "/srv//stick.img", "/srv/stick/", "/", "/srv/a\nb.img", `/${"a".repeat(5000)}`]) {
      expect(withPlugs([stick("usb1", p)]).success, JSON.stringify(p)).toBe(false);
      expect(isStorableImagePath(p)).toBe(false);
    }
    expect(isStorableImagePath("/home/user/USB stick, 1.img")).toBe(true);
    expect(withPlugs([stick("usb1"), stick("usb2")]).success).toBe(false);
    expect(withPlugs([stick("usb1"), stick("usb2", "/srv/stick.img", true)]).success).toBe(false);
  });
});
