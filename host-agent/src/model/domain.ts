// The persistent record of one domain, validated with zod wherever it is loaded.
import { z } from "zod";
import { DOMAIN_CLASSES, MAX_FIREWALL_LINE_BYTES, MAX_FIREWALL_RULES, MAX_PCI_DEVICES, PCI_ADDRESS_PATTERN, parseRuleApi, type DomainClassWord } from "@qvm/protocol/contracts";

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
  })
  .strict();

export type DomainRecord = z.infer<typeof domainRecordSchema>;
