// The image store: a content-addressed cache under the data directory.
//
//   <images>/kernels/<hash>/{vmlinuz,initrd.img,modules.img,manifest.json}
//   <images>/kernels/current -> <hash>
//   <images>/templates/<name>/<hash>/{root.img,manifest.json}
//   <images>/templates/<name>/current -> <hash>
//
// A build writes into "<hash>.partial-<pid>" and renames it into place with the manifest already
// inside, so an entry either exists whole or not at all; a crashed build leaves only a .partial
// directory, which the next build removes.
import { existsSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { readJson, writeJsonAtomic } from "./json-file.js";
import { rememberVerified, withFileDigests } from "./digests.js";

export const BUILD_COMMAND = "./qvm-images build";

/**
 * SHA-256 of each file the manifest names, by its key in `files`: written by publish() when the
 * entry is made, checked by integrity.ts (`qvm-images verify`, and before a domain boots from
 * the entry). Absent in entries made before it existed (and in ones made by other tools).
 */
const fileDigestsSchema = z.record(z.string(), z.string().regex(/^[0-9a-f]{64}$/)).optional();

export const kernelManifestSchema = z.object({
  kind: z.literal("kernel"),
  hash: z.string(),
  kernelRelease: z.string(),
  packageVersion: z.string(),
  builtAt: z.string(),
  files: z.object({ vmlinuz: z.string(), vmlinux: z.string().optional(), initrd: z.string(), modules: z.string() }),
  sha256: fileDigestsSchema,
});
export type KernelManifest = z.infer<typeof kernelManifestSchema>;

export const templateManifestSchema = z.object({
  kind: z.literal("template"),
  name: z.string(),
  hash: z.string(),
  suite: z.string(),
  builtAt: z.string(),
  sizeBytes: z.number(),
  files: z.object({ root: z.string() }),
  sha256: fileDigestsSchema,
  /**
   * The program qvm's initramfs hands the root over to (its `qvm.init=`), when not /sbin/init.
   * The initramfs checks it from outside the root, so no directory on the way may be a link to an
   * absolute path (NixOS' /nix/var/nix/profiles/system is one: the Nix template links /sbin/init
   * instead). Registered templates get it as kernelopts, which their AppVMs inherit. A plain
   * absolute path: it goes on the kernel command line.
   */
  init: z
    .string()
    .regex(/^\/[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/, "init must be an absolute path of letters, digits and . _ + - (it goes on the kernel command line)")
    .max(255)
    .refine((p) => !p.split("/").includes(".."), "init must not contain ..")
    .optional(),
});
export type TemplateManifest = z.infer<typeof templateManifestSchema>;

export interface KernelBundle {
  dir: string;
  manifest: KernelManifest;
  vmlinuz: string;
  /** The uncompressed kernel with its PVH entry point, when the bundle has one (kernel.ts). */
  vmlinux?: string;
  /** What a VMM boots: vmlinux when present (no decompression in the guest), else vmlinuz. */
  image: string;
  initrd: string;
  modules: string;
}

export interface TemplateImage {
  dir: string;
  manifest: TemplateManifest;
  root: string;
}

export const DEFAULT_DATA_DIR = "/var/lib/qvm";

export function defaultImagesDir(env = process.env): string {
  return env.QVM_IMAGES_DIR ?? path.join(env.QVM_DATA_DIR ?? DEFAULT_DATA_DIR, "images");
}

export class ImageStore {
  constructor(readonly root: string) {}

  private kindDir(kind: "kernels" | `templates/${string}`): string {
    return path.join(this.root, kind);
  }

  entryDir(kind: "kernels" | `templates/${string}`, hash: string): string {
    return path.join(this.kindDir(kind), hash);
  }

  /** Runs `build` into a fresh partial directory and publishes it as `hash`, then marks it current. */
  async publish(kind: "kernels" | `templates/${string}`, hash: string, build: (dir: string) => Promise<unknown>): Promise<string> {
    const base = this.kindDir(kind);
    mkdirSync(base, { recursive: true });
    for (const e of readdirSync(base)) if (e.includes(".partial-")) rmSync(path.join(base, e), { recursive: true, force: true });
    const final = path.join(base, hash);
    const partial = `${final}.partial-${process.pid}`;
    mkdirSync(partial, { recursive: true });
    try {
      const manifest = await withFileDigests(partial, await build(partial));
      writeJsonAtomic(path.join(partial, "manifest.json"), manifest);
      rmSync(final, { recursive: true, force: true });
      renameSync(partial, final);
      // Just hashed: the first boot from the entry need not hash it again (integrity.ts).
      const { files, sha256 } = manifest as { files: Record<string, string | undefined>; sha256: Record<string, string> };
      try {
        rememberVerified(this.root, Object.fromEntries(Object.entries(files).flatMap(([k, f]) => (f && sha256[k] ? [[path.join(final, f), sha256[k]]] : []))));
      } catch {
        // only an optimisation
      }
    } catch (err) {
      rmSync(partial, { recursive: true, force: true });
      throw err;
    }
    this.setCurrent(kind, hash);
    return final;
  }

  has(kind: "kernels" | `templates/${string}`, hash: string): boolean {
    return existsSync(path.join(this.entryDir(kind, hash), "manifest.json"));
  }

  setCurrent(kind: "kernels" | `templates/${string}`, hash: string): void {
    const link = path.join(this.kindDir(kind), "current");
    const tmp = `${link}.tmp-${process.pid}`;
    rmSync(tmp, { force: true });
    symlinkSync(hash, tmp);
    renameSync(tmp, link);
  }

  private current(kind: "kernels" | `templates/${string}`): string | undefined {
    try {
      return readlinkSync(path.join(this.kindDir(kind), "current"));
    } catch {
      return undefined;
    }
  }

  /** The current kernel bundle, or NOT_FOUND naming the build command. */
  kernel(): KernelBundle {
    const hash = this.current("kernels");
    const dir = hash && this.entryDir("kernels", hash);
    if (!dir || !existsSync(path.join(dir, "manifest.json"))) {
      throw new QvmError("NOT_FOUND", `no kernel bundle in ${this.root}: run \`${BUILD_COMMAND} kernel\``);
    }
    const manifest = readJson(path.join(dir, "manifest.json"), kernelManifestSchema);
    return {
      dir,
      manifest,
      vmlinuz: path.join(dir, manifest.files.vmlinuz),
      ...(manifest.files.vmlinux ? { vmlinux: path.join(dir, manifest.files.vmlinux) } : {}),
      image: path.join(dir, manifest.files.vmlinux ?? manifest.files.vmlinuz),
      initrd: path.join(dir, manifest.files.initrd),
      modules: path.join(dir, manifest.files.modules),
    };
  }

  /** The hashes of the kernel bundles in the store (current or not). */
  kernelHashes(): string[] {
    const dir = this.kindDir("kernels");
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((e) => e !== "current" && !e.includes(".partial-") && !e.includes(".tmp-"));
  }

  /** One kernel bundle's directory and manifest, by hash. */
  kernelEntry(hash: string): { dir: string; manifest: KernelManifest } {
    const dir = this.entryDir("kernels", hash);
    return { dir, manifest: readJson(path.join(dir, "manifest.json"), kernelManifestSchema) };
  }

  /** The current build of template `name`, or NOT_FOUND naming the build command. */
  template(name: string): TemplateImage {
    const kind = `templates/${name}` as const;
    const hash = this.current(kind);
    const dir = hash && this.entryDir(kind, hash);
    if (!dir || !existsSync(path.join(dir, "manifest.json"))) {
      throw new QvmError("NOT_FOUND", `no template image "${name}" in ${this.root}: run \`${BUILD_COMMAND} template ${name}\``);
    }
    const manifest = readJson(path.join(dir, "manifest.json"), templateManifestSchema);
    return { dir, manifest, root: path.join(dir, manifest.files.root) };
  }

  listTemplates(): TemplateImage[] {
    const dir = path.join(this.root, "templates");
    if (!existsSync(dir)) return [];
    return readdirSync(dir).flatMap((name) => {
      try {
        return [this.template(name)];
      } catch {
        return [];
      }
    });
  }
}
