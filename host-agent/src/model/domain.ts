// The persistent record of one domain, validated with zod wherever it is loaded.
import { z } from "zod";

export const DOMAIN_CLASSES = ["AppVM", "TemplateVM", "StandaloneVM"] as const;
export type DomainClass = (typeof DOMAIN_CLASSES)[number];

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
     * The template image (images/) whose root this domain boots, for TemplateVM and StandaloneVM;
     * an AppVM boots its template's. Until the storage model lands every start gets a throwaway
     * copy-on-write layer over it.
     */
    rootFrom: z.string().optional(),
  })
  .strict();

export type DomainRecord = z.infer<typeof domainRecordSchema>;
