// Content addresses: the sha256 of a build's inputs, in a canonical JSON form.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical((value as Record<string, unknown>)[k])]));
  }
  return value;
}

export function inputsHash(inputs: unknown): string {
  return createHash("sha256").update(JSON.stringify(canonical(inputs))).digest("hex").slice(0, 24);
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    // 1 MiB reads: a template's root is gigabytes, mostly holes.
    createReadStream(file, { highWaterMark: 1024 * 1024 })
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}
