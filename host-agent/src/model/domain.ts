// The persistent record of one domain, validated with zod wherever it is loaded.
import { z } from "zod";
import { DOMAIN_CLASSES, type DomainClassWord } from "@qvm/protocol/contracts";

// Qubes' class names: the words of the admin API's DomainClass, defined once (contracts/words.ts).
export { DOMAIN_CLASSES };
export type DomainClass = DomainClassWord;

const propValue = z.union([z.string(), z.number(), z.boolean()]);

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
  })
  .strict();

export type DomainRecord = z.infer<typeof domainRecordSchema>;
