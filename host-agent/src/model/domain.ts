// The persistent record of one domain, validated with zod wherever it is loaded.
import path from "node:path";
import { z } from "zod";
import {
  DOMAIN_CLASSES,
  MAX_FIREWALL_LINE_BYTES,
  MAX_FIREWALL_RULES,
  MAX_PCI_DEVICES,
  MAX_USB_DEVICES,
  MAX_USB_PLUGS,
  PCI_ADDRESS_PATTERN,
  USB_BUSID_PATTERN,
  parseRuleApi,
  type DomainClassWord,
} from "@qvm/protocol/contracts";

// Qubes' class names: the words of the admin API's DomainClass, defined once (contracts/words.ts).
export { DOMAIN_CLASSES };
export type DomainClass = DomainClassWord;

const propValue = z.union([z.string(), z.number(), z.boolean()]);

function checkFirewallLine(line: string, ctx: z.RefinementCtx): void {
  try {
    parseRuleApi(line);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: `not a firewall rule: ${(err as Error).message}` });
  }
}

/** The longest image path a USB stick may have (Linux's PATH_MAX, with its NUL). */
export const MAX_USB_IMAGE_PATH = 4095;

/** "usb1" … "usb<MAX_USB_PLUGS>": a plug's id within its domain, also its QEMU device id. */
export function usbPlugId(n: number): string {
  return `usb${n}`;
}

/** The number in a plug id ("usb3" → 3), or undefined when it is not one (1..MAX_USB_PLUGS). */
export function usbPlugNumber(id: string): number | undefined {
  const m = /^usb([1-9][0-9]?)$/.exec(id);
  const n = m ? Number(m[1]) : NaN;
  return n >= 1 && n <= MAX_USB_PLUGS ? n : undefined;
}

/**
 * An image path as stored: absolute, already in its normal form (no "." or ".." parts, no double
 * or trailing slash), so that two plugs of one image compare equal as text; no control
 * characters. qvmd opens it as root for the VMM (never the VMM itself), so it never appears on a
 * QEMU command line.
 */
export function isStorableImagePath(p: string): boolean {
  return p.length <= MAX_USB_IMAGE_PATH && path.isAbsolute(p) && path.normalize(p) === p && p !== "/" && !p.endsWith("/") && !/\p{Cc}/u.test(p);
}

const usbPlugIdSchema = z.string().refine((id) => usbPlugNumber(id) !== undefined, `a USB plug id is usb1 … usb${MAX_USB_PLUGS}`);

/**
 * One emulated USB device of the domain (`qvm usb plug`): a mass-storage stick backed by a disk
 * image on the host, a keyboard or a tablet, on the xHCI controller the domain gets when it
 * starts with any (docs/usb.md).
 */
export const usbPlugSchema = z.discriminatedUnion("kind", [
  z
    .object({
      id: usbPlugIdSchema,
      kind: z.literal("disk"),
      path: z.string().refine(isStorableImagePath, "a USB stick's image is an absolute path in normal form"),
      /** The stick is write-protected: the image is opened read-only and the guest sees it so. */
      readOnly: z.boolean(),
    })
    .strict(),
  z.object({ id: usbPlugIdSchema, kind: z.literal("keyboard") }).strict(),
  z.object({ id: usbPlugIdSchema, kind: z.literal("tablet") }).strict(),
]);
export type UsbPlug = z.infer<typeof usbPlugSchema>;

export const domainRecordSchema = z
  .object({
    name: z.string(),
    class: z.enum(DOMAIN_CLASSES),
    /** Explicitly set properties only (label always); the rest fall back (properties.ts). */
    props: z.record(z.string(), propValue),
    features: z.record(z.string(), z.string()),
    tags: z.array(z.string()),
    createdAt: z.string(),
    /**
     * Where a TemplateVM's or StandaloneVM's root came from when it was created: the template
     * image (images/) or the TemplateVM it copied. Informational; the root is its own volume.
     */
    rootFrom: z.string().optional(),
    /** Per-volume settings (`qvm volume config`); absent means the defaults. */
    volumes: z.partialRecord(z.enum(["root", "private"]), z.object({ revisionsToKeep: z.number().int().min(0).max(64) }).strict()).optional(),
    /** A disposable made for one `qvm run --dispvm`: destroyed after it, or when qvmd next starts. */
    autoCleanup: z.boolean().optional(),
    /** The unprivileged uid (and gid) the domain's VMM runs as; allocated at its first start, freed with it. */
    vmmUid: z.number().int().positive().optional(),
    /**
     * The firewall rules (`qvm firewall`), Qubes' admin API lines in order, as its firewall.xml
     * holds them; absent: Qubes' default, the one rule `action=accept`. Every line must parse: a
     * rule skipped would change what the rules after it allow.
     */
    firewall: z.array(z.string().max(MAX_FIREWALL_LINE_BYTES).superRefine(checkFirewallLine)).max(MAX_FIREWALL_RULES).optional(),
    /** Stable id given at creation, never shared while the domain exists: its 10.137.x.y address. */
    qid: z.number().int().min(1).max(65535).optional(),
    /** A disposable's id: its 10.138.x.y address. */
    dispid: z.number().int().min(1).max(65535).optional(),
    /**
     * Host PCI devices assigned to the domain (`qvm pci attach --persistent`), by canonical BDF:
     * passed through with VFIO from its next start. A device is assigned to one domain at most.
     */
    pci: z
      .array(z.object({ bdf: z.string().regex(PCI_ADDRESS_PATTERN) }).strict())
      .max(MAX_PCI_DEVICES)
      .refine((a) => new Set(a.map((d) => d.bdf)).size === a.length, "a PCI device is assigned twice")
      .optional(),
    /**
     * USB devices of other domains assigned to this one (`qvm usb attach --persistent`), by
     * backend and bus id: attached again at each of its starts while the backend has the device.
     */
    usb: z
      .array(z.object({ backend: z.string().min(1).max(64), busid: z.string().regex(USB_BUSID_PATTERN) }).strict())
      .max(MAX_USB_DEVICES)
      .refine((a) => new Set(a.map((d) => `${d.backend}:${d.busid}`)).size === a.length, "a USB device is assigned twice")
      .optional(),
    /**
     * Emulated USB devices (`qvm usb plug`), in the order plugged; absent: none. A domain that
     * has any at its start gets an xHCI controller with them. An image is plugged once, in one
     * domain (qvmd checks that across domains; here within this one).
     */
    usbPlugs: z
      .array(usbPlugSchema)
      .min(1)
      .max(MAX_USB_PLUGS)
      .refine((a) => new Set(a.map((p) => p.id)).size === a.length, "a USB plug id is used twice")
      .refine((a) => {
        const images = a.flatMap((p) => (p.kind === "disk" ? [p.path] : []));
        return new Set(images).size === images.length;
      }, "a USB stick's image is plugged twice")
      .optional(),
  })
  .strict();

export type DomainRecord = z.infer<typeof domainRecordSchema>;
