// Template archives: a template image as one file, to move it between hosts (`qvm template
// export NAME FILE`, `qvm template import FILE`), and the form in which templates built elsewhere
// (e.g. by Nix) reach a host.
//
// Format "qvm-template/1": a POSIX tar archive (ustar or pax; the archive itself not compressed)
// whose members are exactly, in this order:
//
//   qvm-template.json  the manifest: UTF-8 JSON, at most MAX_TEMPLATE_MANIFEST_BYTES, of the form
//                      { "format": "qvm-template/1", "name": NAME, "suite"?: SUITE, "builtAt": ISO-8601,
//                        "init"?: PATH (what qvm's initramfs hands over to; store.ts, docs/design.md),
//                        "root": { "file": "root.img.zst", "compressedBytes": N,
//                                  "sha256": HEX (of the compressed member), "sizeBytes": N (raw) } }
//                      (templateArchiveManifestSchema; unknown fields are refused)
//   root.img.zst       the template's raw root image (an ext4 filesystem, usually a sparse file)
//                      compressed with zstd (one or more frames, windows up to zstd's default
//                      128 MiB decompression limit)
//
// Both are regular files; nothing else may be in the archive (no directories, links, devices,
// paths, GNU sparse members, duplicates, or members after root.img.zst).
//
// Import runs as root on untrusted bytes, so it reads the archive as a stream and checks, before
// anything becomes visible: each entry's type and name, the manifest's size and every field, the
// member's size against compressedBytes, the sha256 of the compressed member, the decompressed
// size against sizeBytes (decompression stops as soon as it goes past). It writes into a partial
// directory of the ImageStore (ImageStore.publish), so a failure leaves nothing behind. The
// checksum detects corruption, not tampering: whoever can write the archive can write its
// manifest, so import a template only from a source you trust with root's disk images.
//
// The tar library is tar-stream (mafintosh): stream-only, it parses headers and hands over each
// entry's bytes and never touches the filesystem itself, so every path, link and device decision
// stays here. It bounds pax/GNU long headers (4 MiB), applies pax `path`/`size` overrides before
// we see the header (so the checks below see the effective name and size), verifies header
// checksums and reports an archive that ends early; it writes plain ustar for short names.
// node-tar, the other well-kept choice, is built around extracting to disk (and silently
// gunzips), which is what this must not do.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, createReadStream, createWriteStream, existsSync, fsyncSync, openSync, rmdirSync, statSync } from "node:fs";
import { open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract, pack, type Header } from "tar-stream";
import * as z from "zod";
import { QvmError, validateDomainName } from "@qvm/protocol/contracts";
import { sha256File } from "./hash.js";
import { fsyncDir } from "./json-file.js";
import { silentProgress, type Progress } from "./progress.js";
import { templateManifestSchema, type ImageStore, type TemplateImage, type TemplateManifest } from "./store.js";

export const TEMPLATE_ARCHIVE_FORMAT = "qvm-template/1";
export const MANIFEST_MEMBER = "qvm-template.json";
export const ROOT_MEMBER = "root.img.zst";
/** The members, in their order. */
const MEMBERS = [MANIFEST_MEMBER, ROOT_MEMBER] as const;
export const MAX_TEMPLATE_MANIFEST_BYTES = 64 * 1024;
/** The largest raw root image an archive may declare (a template's root is 4 GiB today). */
export const MAX_TEMPLATE_ROOT_BYTES = 256 * 1024 ** 3;
/** The suite imported templates get in the store when their manifest names none. */
export const IMPORTED_SUITE = "imported";
const SECTOR = 512;
/** The granularity at which import leaves zero runs of root.img as holes. */
const SPARSE_BLOCK = 4096;
const ZEROS = Buffer.alloc(SPARSE_BLOCK);

const domainName = z.string().superRefine((name, ctx) => {
  try {
    validateDomainName(name);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

export const templateArchiveManifestSchema = z
  .object({
    format: z.literal(TEMPLATE_ARCHIVE_FORMAT),
    name: domainName,
    suite: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, "a suite is 1-64 letters, digits, '.', '_', '+' or '-'").optional(),
    builtAt: z.iso.datetime({ offset: true }),
    // The store's own rule: it goes on the kernel command line.
    init: templateManifestSchema.shape.init,
    root: z
      .object({
        file: z.literal(ROOT_MEMBER),
        compressedBytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
        sha256: z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lowercase hex digits"),
        sizeBytes: z.number().int().min(SECTOR).max(MAX_TEMPLATE_ROOT_BYTES).multipleOf(SECTOR),
      })
      .strict(),
  })
  .strict();
export type TemplateArchiveManifest = z.infer<typeof templateArchiveManifestSchema>;

export interface TemplateArchiveOptions {
  /** Progress lines for the long steps (compressing, decompressing). */
  progress?: Progress;
  /** The zstd binary (Debian's `zstd` package; scripts/install-system-deps.sh). */
  zstd?: string;
}

export interface ImportTemplateOptions extends TemplateArchiveOptions {
  /** Register the image under this name instead of the manifest's. */
  name?: string;
  /** Import even when a template image of that name exists; the new one becomes current, the old entry stays. */
  replace?: boolean;
}

/** "4.0 GiB", "12.5 MiB": sizes in progress lines and messages. */
export function formatBytes(bytes: number): string {
  const units = ["GiB", "MiB", "KiB"] as const;
  for (const [i, unit] of units.entries()) {
    const n = bytes / 1024 ** (units.length - i);
    if (n >= 1) return `${n.toFixed(1)} ${unit}`;
  }
  return `${bytes} bytes`;
}

// ---- export ---------------------------------------------------------------------------------

/**
 * Writes the store's current image of template `name` to `file` as a template archive, atomically
 * (a temp file beside it, fsynced, renamed). Returns the archive's manifest.
 */
export async function exportTemplateArchive(store: ImageStore, name: string, file: string, opts: TemplateArchiveOptions = {}): Promise<TemplateArchiveManifest> {
  const progress = opts.progress ?? silentProgress;
  const image = store.template(name);
  const sizeBytes = statSync(image.root).size;
  const dest = path.resolve(file);
  const tmpTar = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp-${process.pid}`);
  const tmpRoot = path.join(path.dirname(dest), `.${path.basename(dest)}.root-${process.pid}.zst`);
  try {
    await progress.step(`exporting root (${formatBytes(sizeBytes)})`, () => compressRoot(image.root, tmpRoot, opts.zstd ?? "zstd"));
    const compressedBytes = (await stat(tmpRoot)).size;
    const candidate = {
      format: TEMPLATE_ARCHIVE_FORMAT,
      name,
      suite: image.manifest.suite,
      builtAt: image.manifest.builtAt,
      ...(image.manifest.init === undefined ? {} : { init: image.manifest.init }),
      root: { file: ROOT_MEMBER, compressedBytes, sha256: await sha256File(tmpRoot), sizeBytes },
    };
    // Refuse to write an archive that import would refuse.
    const checked = templateArchiveManifestSchema.safeParse(candidate);
    if (!checked.success) {
      throw new QvmError("FAILED_PRECONDITION", `template image ${name} in ${image.dir} cannot be exported: ${describeIssues(checked.error)}`);
    }
    const manifest = checked.data;
    await progress.step(`writing ${dest} (${formatBytes(compressedBytes)})`, () => writeArchive(manifest, tmpRoot, tmpTar));
    await rename(tmpTar, dest);
    fsyncDir(path.dirname(dest));
    return manifest;
  } finally {
    await rm(tmpTar, { force: true });
    await rm(tmpRoot, { force: true });
  }
}

async function compressRoot(root: string, out: string, zstd: string): Promise<void> {
  const fh = await open(out, "wx", 0o600);
  try {
    // zstd reads the image and writes the archive member straight to the file: nothing of
    // either passes through this process.
    const r = await runProcess(zstd, ["-q", "-T0", "-c", "--", root], ["ignore", fh.fd, "pipe"]);
    if (r.error) throw missingZstd(zstd, r.error);
    if (r.code !== 0) throw new QvmError("STORAGE_FAILED", `zstd could not compress ${root}: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeArchive(manifest: TemplateArchiveManifest, compressedRoot: string, out: string): Promise<void> {
  // The image's build time as every member's mtime: exporting the same image twice gives the same bytes.
  const common = { mode: 0o644, uid: 0, gid: 0, mtime: new Date(manifest.builtAt), type: "file" as const };
  const tar = pack();
  const fd = openSync(out, "w", 0o644);
  try {
    const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
    const members = (async () => {
      await new Promise<void>((resolve, reject) =>
        tar.entry({ ...common, name: MANIFEST_MEMBER, size: manifestBytes.length }, manifestBytes, (err) => (err ? reject(err) : resolve())),
      );
      const entry = tar.entry({ ...common, name: ROOT_MEMBER, size: manifest.root.compressedBytes });
      await pipeline(createReadStream(compressedRoot), entry as unknown as Writable);
      tar.finalize();
    })();
    // A failed write destroys the pack, and with it the entry being written. (A stream on the
    // descriptor, not on a FileHandle: a FileHandle's stream keeps it from closing.)
    await Promise.all([pipeline(tar, createWriteStream("", { fd, autoClose: false })), members]);
    fsyncSync(fd);
  } finally {
    tar.destroy();
    closeSync(fd);
  }
}

// ---- import ---------------------------------------------------------------------------------

/**
 * Imports the template archive `file` (untrusted: validated strictly, see the file header) into
 * `store` as template image `opts.name ?? manifest.name`, and makes it current. Refuses a name
 * that already has an image unless `opts.replace`.
 */
export async function importTemplateArchive(store: ImageStore, file: string, opts: ImportTemplateOptions = {}): Promise<TemplateImage> {
  const progress = opts.progress ?? silentProgress;
  const archive = path.resolve(file);
  const bad = (what: string, cause?: unknown) => new QvmError("INVALID_ARGUMENT", `template archive ${archive}: ${what}`, cause === undefined ? undefined : { cause });
  const newName = opts.name === undefined ? undefined : validateDomainName(opts.name);
  let info;
  try {
    info = statSync(archive);
  } catch (err) {
    throw new QvmError("NOT_FOUND", `cannot read template archive ${archive}: ${(err as Error).message}`, { cause: err });
  }
  if (!info.isFile()) throw bad("not a regular file");

  const extractor = extract();
  // A read error reaches us through the extractor, which the pipeline destroys with it.
  const feeding = pipeline(createReadStream(archive), extractor as unknown as Writable).catch(() => undefined);
  const entries = extractor[Symbol.asyncIterator]() as AsyncIterator<Member>;
  const next = async (): Promise<IteratorResult<Member>> => {
    try {
      return await entries.next();
    } catch (err) {
      throw tarError(err, bad);
    }
  };
  const nextMember = async (index: number): Promise<Member> => {
    const r = await next();
    if (r.done) throw bad(`ends early: ${MEMBERS[index]} is missing`);
    checkEntry(r.value.header, index, bad);
    return r.value;
  };

  try {
    const manifest = await readManifest(await nextMember(0), bad);
    const name = newName ?? manifest.name;
    const kind = `templates/${name}` as const;
    if (!opts.replace && hasTemplate(store, name)) {
      throw new QvmError("ALREADY_EXISTS", `template image ${name} already exists in ${store.root}: import with --replace to make this one current (the old one is kept), or --name to import it under another name`);
    }
    const root = await nextMember(1);
    if (root.header.size !== manifest.root.compressedBytes) {
      throw bad(`${ROOT_MEMBER} is ${root.header.size} bytes, the manifest says ${manifest.root.compressedBytes} (compressedBytes)`);
    }
    const hash = manifest.root.sha256.slice(0, 24);
    const templateDir = path.join(store.root, "templates", name);
    const dirExisted = existsSync(templateDir);
    try {
      await store.publish(kind, hash, async (dir) => {
        await progress.step(`importing root (${formatBytes(manifest.root.compressedBytes)} → ${formatBytes(manifest.root.sizeBytes)})`, () =>
          restoreRoot(root, path.join(dir, "root.img"), manifest, opts.zstd ?? "zstd", bad),
        );
        const after = await next();
        if (!after.done) throw bad(`unexpected member ${JSON.stringify(after.value.header.name)} after ${ROOT_MEMBER}: the archive holds exactly ${MEMBERS.join(" and ")}`);
        const stored: TemplateManifest = {
          kind: "template",
          name,
          hash,
          suite: manifest.suite ?? IMPORTED_SUITE,
          builtAt: manifest.builtAt,
          sizeBytes: manifest.root.sizeBytes,
          files: { root: "root.img" },
          ...(manifest.init === undefined ? {} : { init: manifest.init }),
        };
        return stored;
      });
    } catch (err) {
      // publish removed its partial directory; the template's own directory goes too if this made it.
      if (!dirExisted) {
        try {
          rmdirSync(templateDir);
        } catch {
          // not empty (another build's entry) or already gone
        }
      }
      throw err;
    }
    return store.template(name);
  } finally {
    await entries.return?.();
    await feeding;
  }
}

function hasTemplate(store: ImageStore, name: string): boolean {
  try {
    store.template(name);
    return true;
  } catch {
    return false;
  }
}

/** A tar entry: its (effective) header and a stream of its bytes. */
type Member = Readable & { header: Header };

function checkEntry(h: Header, index: number, bad: (what: string) => QvmError): void {
  const name = JSON.stringify(h.name);
  if (h.type !== "file") {
    throw bad(`member ${name} is ${h.type ? `a ${h.type}` : "of an unknown type"}, not a regular file${h.linkname ? ` (-> ${JSON.stringify(h.linkname)})` : ""}`);
  }
  if (h.name === MEMBERS[index]) return;
  if (MEMBERS.slice(0, index).some((m) => m === h.name)) throw bad(`duplicate member ${name}`);
  const why = h.name.startsWith("/") ? " (an absolute path)" : h.name.split("/").includes("..") ? " (a path with ..)" : h.name.includes("/") ? " (a path)" : "";
  throw bad(`unexpected member ${name}${why} where ${MEMBERS[index]} belongs: the archive holds exactly ${MEMBERS.join(" and ")}, in that order`);
}

function tarError(err: unknown, bad: (what: string, cause?: unknown) => QvmError): QvmError {
  const message = (err as Error).message ?? String(err);
  if (/unexpected end of data/i.test(message)) return bad("ends early (truncated)", err);
  if (/invalid tar header/i.test(message)) return bad("is not a tar archive, or is corrupt (the archive itself must not be compressed)", err);
  return bad(`cannot be read: ${message}`, err);
}

async function readManifest(member: Member, bad: (what: string, cause?: unknown) => QvmError): Promise<TemplateArchiveManifest> {
  if (member.header.size > MAX_TEMPLATE_MANIFEST_BYTES) {
    throw bad(`${MANIFEST_MEMBER} is ${member.header.size} bytes, over its ${MAX_TEMPLATE_MANIFEST_BYTES}-byte limit`);
  }
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of member) chunks.push(chunk as Buffer);
  } catch (err) {
    throw tarError(err, bad);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks)));
  } catch (err) {
    throw bad(`${MANIFEST_MEMBER} is not UTF-8 JSON: ${(err as Error).message}`, err);
  }
  const r = templateArchiveManifestSchema.safeParse(raw);
  if (!r.success) throw bad(`${MANIFEST_MEMBER} is invalid: ${describeIssues(r.error)}`);
  return r.data;
}

/** Every issue, in one line: `root.sha256: sha256 must be …; name: …`. */
function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join(".") : "(manifest)"}: ${i.message}`).join("; ");
}

/**
 * Decompresses the root member (guest-controlled bytes: the archive is untrusted) into `out`,
 * sparse, checking its sha256 and both sizes. zstd runs as a pipe: this process streams the
 * member into it and the output onto disk, and kills it as soon as the output passes sizeBytes.
 */
async function restoreRoot(
  member: Readable,
  out: string,
  manifest: TemplateArchiveManifest,
  zstd: string,
  bad: (what: string, cause?: unknown) => QvmError,
): Promise<void> {
  const { sizeBytes, sha256 } = manifest.root;
  const child = spawn(zstd, ["-d", "-q", "-c"], { stdio: ["pipe", "pipe", "pipe"] });
  const exited = collectExit(child);
  const hash = createHash("sha256");
  let stdinOpen = true;
  child.stdin.on("error", () => (stdinOpen = false));
  child.stdin.on("close", () => (stdinOpen = false));

  // Feeding goes on after zstd has given up (corrupt data), to tell a checksum mismatch apart.
  const feed = (async () => {
    for await (const chunk of member) {
      hash.update(chunk as Buffer);
      if (stdinOpen && !child.stdin.write(chunk)) await writableAgain(child.stdin);
    }
    child.stdin.end();
  })();
  const restore = (async () => {
    const fh = await open(out, "wx", 0o644);
    try {
      const writer = new SparseWriter(fh);
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        if (writer.size + chunk.length > sizeBytes) {
          throw bad(`${ROOT_MEMBER} decompresses to more than the ${sizeBytes} bytes the manifest says (sizeBytes)`);
        }
        await writer.write(chunk);
      }
      await fh.truncate(writer.size);
      await fh.sync();
      return writer.size;
    } finally {
      await fh.close();
    }
  })();
  const abort = () => {
    child.kill("SIGKILL");
    member.destroy();
  };
  feed.catch(abort);
  restore.catch(abort);
  const [fed, restored, exit] = await Promise.allSettled([feed, restore, exited]);

  if (exit.status === "fulfilled" && exit.value.error) throw missingZstd(zstd, exit.value.error);
  if (restored.status === "rejected") {
    if (restored.reason instanceof QvmError) throw restored.reason;
    const code = (restored.reason as NodeJS.ErrnoException).code;
    throw new QvmError(code === "ENOSPC" ? "RESOURCE_EXHAUSTED" : "STORAGE_FAILED", `cannot write ${out}: ${(restored.reason as Error).message}`, { cause: restored.reason });
  }
  if (fed.status === "rejected") throw tarError(fed.reason, bad);
  const actual = hash.digest("hex");
  if (actual !== sha256) throw bad(`${ROOT_MEMBER} has sha256 ${actual}, the manifest says ${sha256}`);
  const { code, signal, stderr } = exit.status === "fulfilled" ? exit.value : { code: null, signal: null, stderr: "" };
  if (code !== 0) throw bad(`${ROOT_MEMBER} is not a valid zstd stream: ${stderr.trim() || `zstd exit ${code ?? signal}`}`);
  if (restored.value !== sizeBytes) throw bad(`${ROOT_MEMBER} decompresses to ${restored.value} bytes, the manifest says ${sizeBytes} (sizeBytes)`);
}

/** Writes a stream of bytes at increasing offsets, leaving zero blocks as holes. */
class SparseWriter {
  size = 0;
  constructor(private readonly fh: FileHandle) {}

  async write(chunk: Buffer): Promise<void> {
    let runStart = -1;
    let i = 0;
    while (i < chunk.length) {
      // Blocks aligned to the file's offsets, so holes are whole filesystem blocks.
      const end = Math.min(chunk.length, i + SPARSE_BLOCK - ((this.size + i) % SPARSE_BLOCK));
      const zero = chunk.subarray(i, end).equals(ZEROS.subarray(0, end - i));
      if (!zero && runStart < 0) runStart = i;
      if (zero && runStart >= 0) {
        await this.fh.write(chunk, runStart, i - runStart, this.size + runStart);
        runStart = -1;
      }
      i = end;
    }
    if (runStart >= 0) await this.fh.write(chunk, runStart, chunk.length - runStart, this.size + runStart);
    this.size += chunk.length;
  }
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  error?: Error;
}

/** Runs a program to its end with the given stdio (stderr is collected, up to 8 KiB). */
function runProcess(file: string, args: string[], stdio: ["ignore" | "pipe", "pipe" | number, "pipe"]): Promise<Exit> {
  return collectExit(spawn(file, args, { stdio }));
}

function collectExit(child: ChildProcess): Promise<Exit> {
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (d: string) => {
    if (stderr.length < 8192) stderr += d;
  });
  return new Promise((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, stderr, error }));
    child.once("close", (code, signal) => resolve({ code, signal, stderr }));
  });
}

function writableAgain(stream: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("error", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
    stream.once("error", done);
  });
}

function missingZstd(zstd: string, err: Error): QvmError {
  if ((err as NodeJS.ErrnoException).code === "ENOENT") {
    return new QvmError("MISSING_DEPENDENCY", `${zstd} not found: run \`bash scripts/install-system-deps.sh\` as root`, { cause: err });
  }
  return new QvmError("STORAGE_FAILED", `cannot run ${zstd}: ${err.message}`, { cause: err });
}
