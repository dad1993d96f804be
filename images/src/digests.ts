// SHA-256 of image files, streamed (a template's root is gigabytes, mostly holes).
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { sha256File } from "./hash.js";
import { writeJsonAtomic } from "./json-file.js";

/** `manifest` with `sha256` set to the digest of every file its `files` names (paths in `dir`). */
export async function withFileDigests<M>(dir: string, manifest: M): Promise<M> {
  const files = (manifest as { files?: Record<string, string | undefined> }).files;
  if (!files) return manifest;
  const sha256: Record<string, string> = {};
  // A file the manifest names but the build did not make gets no digest, and the integrity check
  // refuses the entry for it.
  for (const [key, name] of Object.entries(files)) if (name && existsSync(path.join(dir, name))) sha256[key] = await sha256File(path.join(dir, name));
  return { ...manifest, sha256 };
}

/**
 * The record of good checks, <images>/.verified.json: file path → its identity when it last
 * matched its manifest. A file whose identity is unchanged is not hashed again. Losing the
 * record costs a re-hash, never a false pass.
 */
export const VERIFIED_CACHE_FILE = ".verified.json";

const cacheSchema = z.record(z.string(), z.object({ dev: z.number(), ino: z.number(), size: z.number(), mtimeMs: z.number(), sha256: z.string() }));
export type VerifiedCache = z.infer<typeof cacheSchema>;
export type FileIdentity = { dev: number; ino: number; size: number; mtimeMs: number };

export function fileIdentity(file: string): FileIdentity | undefined {
  try {
    const st = statSync(file);
    return { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
  } catch {
    return undefined;
  }
}

export function readVerified(imagesDir: string): VerifiedCache {
  try {
    return cacheSchema.parse(JSON.parse(readFileSync(path.join(imagesDir, VERIFIED_CACHE_FILE), "utf8")));
  } catch {
    return {};
  }
}

/** Records that each file matched `sha256` as it is now. Throws when the record cannot be written. */
export function rememberVerified(imagesDir: string, files: Record<string, string>): void {
  const cache = readVerified(imagesDir);
  for (const [file, sha256] of Object.entries(files)) {
    const id = fileIdentity(file);
    if (id) cache[file] = { ...id, sha256 };
  }
  writeJsonAtomic(path.join(imagesDir, VERIFIED_CACHE_FILE), cache);
}
