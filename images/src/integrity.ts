// Integrity of what boots (the "canary"): the files of kernel bundles and template images are
// checked against the SHA-256 their manifests recorded when the entry was made (store.ts
// publish). `qvm-images verify` hashes everything; before a domain boots, qvmd checks the kernel
// bundle and a template root that is still the store's image, hashing only files whose identity
// (device, inode, size, mtime) changed since their last good check. That cache is
// <images>/.verified.json; losing it costs a re-hash, never a false pass.
//
// What this catches: a file changed behind qvm's back (disk corruption, a copy gone wrong, an
// edit outside qvm). What it does not: someone who can write the store and keeps mtime and size
// can also rewrite the manifest and the cache; the check is a canary, not a signature.
import { existsSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { fileIdentity as identity, readVerified, rememberVerified } from "./digests.js";
import { sha256File } from "./hash.js";
import type { ImageStore, KernelBundle, KernelManifest } from "./store.js";

export { VERIFIED_CACHE_FILE } from "./digests.js";

export type FileCheck = "ok" | "mismatch" | "missing" | "unrecorded";

export interface EntryReport {
  kind: "kernel" | "template";
  /** The template's name, or the kernel bundle's hash. */
  name: string;
  dir: string;
  files: { key: string; path: string; result: FileCheck; expected?: string; actual?: string }[];
}

export class ImageIntegrity {
  constructor(
    private readonly store: ImageStore,
    private readonly log: (msg: string) => void = () => {},
  ) {}

  /**
   * Throws CORRUPT_STATE naming the file and the fix when a file of `bundle` differs from its
   * manifest; an entry without recorded digests passes with a log line.
   */
  async checkKernel(bundle: KernelBundle): Promise<void> {
    const { manifest } = bundle;
    // A bundle made by hand (tests' stand-ins) has no manifest at all: nothing to check against.
    if (!manifest) return;
    if (!manifest.sha256) return this.log(`kernel bundle ${manifest.hash} has no recorded digests (made before they existed): not checked; rebuild it with \`./qvm-images build kernel --force\``);
    const what = `kernel bundle ${manifest.hash}`;
    const fix = "rebuild it with `./qvm-images build kernel --force` (or restore the file)";
    await this.checkFiles(what, bundle.dir, manifest.files, manifest.sha256, fix);
  }

  /**
   * `root` is a domain's root volume file. While it is still a template image's own file (a
   * TemplateVM's root is a hard link to the image until the TemplateVM first changes it), it is
   * checked against that image's manifest; once qvm has written its own copy it is the domain's
   * data and nothing is checked.
   */
  async checkTemplateRoot(root: string): Promise<void> {
    const id = identity(root);
    if (!id) return;
    const image = this.store.listTemplates().find((t) => {
      const other = identity(t.root);
      return other !== undefined && other.dev === id.dev && other.ino === id.ino;
    });
    if (!image?.manifest.sha256) return;
    const fix = `rebuild it with \`qvm template build ${image.manifest.name}\` (or \`qvm template import\` it again)`;
    await this.checkFiles(`template image ${image.manifest.name}`, image.dir, image.manifest.files, image.manifest.sha256, fix);
  }

  /** Hashes every file of every entry (`qvm-images verify`), cache or not. */
  async verifyAll(onFile: (file: string) => void = () => {}): Promise<EntryReport[]> {
    const reports: EntryReport[] = [];
    for (const bundle of this.kernels()) reports.push(await this.report("kernel", bundle.manifest.hash, bundle.dir, bundle.manifest.files, bundle.manifest.sha256, onFile));
    for (const t of this.store.listTemplates()) reports.push(await this.report("template", t.manifest.name, t.dir, t.manifest.files, t.manifest.sha256, onFile));
    return reports;
  }

  private kernels(): { dir: string; manifest: KernelManifest }[] {
    const out: { dir: string; manifest: KernelManifest }[] = [];
    for (const hash of this.store.kernelHashes()) {
      try {
        out.push(this.store.kernelEntry(hash));
      } catch {
        // a half-made or foreign directory: not an entry
      }
    }
    return out;
  }

  private async report(
    kind: EntryReport["kind"],
    name: string,
    dir: string,
    files: Record<string, string | undefined>,
    digests: Record<string, string> | undefined,
    onFile: (file: string) => void,
  ): Promise<EntryReport> {
    const out: EntryReport = { kind, name, dir, files: [] };
    const good: Record<string, string> = {};
    for (const [key, rel] of Object.entries(files)) {
      if (!rel) continue;
      const file = path.join(dir, rel);
      const expected = digests?.[key];
      if (!existsSync(file)) out.files.push({ key, path: file, result: "missing", ...(expected ? { expected } : {}) });
      else if (!expected) out.files.push({ key, path: file, result: "unrecorded" });
      else {
        onFile(file);
        const actual = await sha256File(file);
        out.files.push({ key, path: file, result: actual === expected ? "ok" : "mismatch", expected, actual });
        if (actual === expected) good[file] = actual;
      }
    }
    if (Object.keys(good).length) this.remember(good);
    return out;
  }

  private async checkFiles(what: string, dir: string, files: Record<string, string | undefined>, digests: Record<string, string>, fix: string): Promise<void> {
    const cache = readVerified(this.store.root);
    const good: Record<string, string> = {};
    for (const [key, rel] of Object.entries(files)) {
      if (!rel) continue;
      const file = path.join(dir, rel);
      const expected = digests[key];
      if (!expected) throw new QvmError("CORRUPT_STATE", `${what}: its manifest has no digest for ${key} (${file}): ${fix}`);
      const id = identity(file);
      if (!id) throw new QvmError("CORRUPT_STATE", `${what}: ${file} is missing: ${fix}`);
      const seen = cache[file];
      if (seen && seen.sha256 === expected && seen.dev === id.dev && seen.ino === id.ino && seen.size === id.size && seen.mtimeMs === id.mtimeMs) continue;
      this.log(`${what}: checking ${file} (changed since its last check)`);
      const actual = await sha256File(file);
      if (actual !== expected) {
        throw new QvmError("CORRUPT_STATE", `${what}: ${file} does not match its manifest (sha256 ${actual}, recorded ${expected}): it changed after it was made, so nothing boots from it; ${fix}`);
      }
      good[file] = actual;
    }
    if (Object.keys(good).length) this.remember(good);
  }

  /** Records good checks (file → sha256) in one write. */
  private remember(files: Record<string, string>): void {
    try {
      rememberVerified(this.store.root, files);
    } catch (err) {
      // A read-only store: every check hashes again, which is slower but as safe.
      this.log(`cannot record the check of ${Object.keys(files).join(", ")}: ${(err as Error).message}`);
    }
  }
}

