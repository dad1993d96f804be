// qemu-img and mke2fs, the only tools that touch volume files. Every failure becomes a QvmError
// naming the file (STORAGE_FAILED); ENOSPC is reported as a full disk (RESOURCE_EXHAUSTED) so the
// caller can say what to free.
import { execa } from "execa";
import { QvmError } from "@qvm/protocol";
import { z } from "zod";

async function tool(file: string, args: string[], what: string): Promise<string> {
  try {
    return (await execa(file, args)).stdout;
  } catch (err) {
    const e = err as { code?: string; stderr?: string; message: string };
    if (e.code === "ENOENT") throw new QvmError("MISSING_DEPENDENCY", `${file} not found: run \`bash scripts/install-system-deps.sh\``);
    const detail = (e.stderr || e.message).trim().split("\n").slice(-2).join(" ");
    if (/No space left on device/i.test(detail)) throw new QvmError("RESOURCE_EXHAUSTED", `${what}: the disk is full (${detail}); free space and try again`);
    throw new QvmError("STORAGE_FAILED", `${what}: ${detail}`, { cause: err });
  }
}

/** A qcow2 file that records changes over `backing`; the backing file is never written. */
export function createOverlay(backing: string, overlay: string, backingFormat: "raw" | "qcow2" = "raw"): Promise<string> {
  return tool("qemu-img", ["create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, overlay], `cannot create ${overlay}`);
}

/** A fresh ext4 filesystem of `sizeMiB` in a qcow2 file (formatted raw, then converted: only used blocks are stored). */
export async function createExt4Qcow2(file: string, sizeMiB: number, label: string, scratch: string): Promise<void> {
  await tool("mke2fs", ["-q", "-t", "ext4", "-L", label, "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", scratch, `${sizeMiB}M`], `cannot format ${scratch}`);
  await tool("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", scratch, file], `cannot create ${file}`);
}

/** Writes overlay+backing as one new sparse raw file (a template's root committed at stop). */
export function flattenToRaw(overlay: string, out: string): Promise<string> {
  return tool("qemu-img", ["convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k", overlay, out], `cannot commit ${overlay}`);
}

/**
 * A qcow2 volume's content (its current state, or internal snapshot `snapshot`) as a new sparse
 * raw file. `-U`: the image may be open in a running VMM (a snapshot is immutable, so reading it
 * then is consistent).
 */
export function exportRaw(file: string, out: string, snapshot?: string): Promise<string> {
  const at = snapshot ? ["-l", `snapshot.name=${snapshot}`] : [];
  return tool("qemu-img", ["convert", "-U", ...at, "-f", "qcow2", "-O", "raw", "-S", "4k", file, out], `cannot read ${file}${snapshot ? ` at revision ${snapshot}` : ""}`);
}

/** A raw file converted into a new qcow2 file `out` (only its data is stored). */
export function rawToQcow2(raw: string, out: string): Promise<string> {
  return tool("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, out], `cannot write ${out}`);
}

/** `qemu-img map` of a raw file, as JSON text: where it has data and where holes. */
export function mapRaw(file: string): Promise<string> {
  return tool("qemu-img", ["map", "--output=json", "-f", "raw", file], `cannot map ${file}`);
}

export function copyQcow2(src: string, out: string): Promise<string> {
  return tool("qemu-img", ["convert", "-q", "-f", "qcow2", "-O", "qcow2", src, out], `cannot copy ${src}`);
}

export function resizeImage(file: string, format: "raw" | "qcow2", sizeBytes: number): Promise<string> {
  return tool("qemu-img", ["resize", "-q", "-f", format, file, String(sizeBytes)], `cannot resize ${file}`);
}

export interface Snapshot {
  name: string;
  date: string;
}

export interface ImageInfo {
  virtualSize: number;
  actualSize: number;
  /** Internal snapshots (qcow2): the revisions of a volume. */
  snapshots: Snapshot[];
}

/** The part of `qemu-img info --output=json` qvm reads; other fields vary by QEMU version. */
const imageInfoSchema = z.object({
  "virtual-size": z.number().int().nonnegative(),
  "actual-size": z.number().int().nonnegative(),
  snapshots: z.array(z.object({ name: z.string(), "date-sec": z.number() })).optional(),
});

export async function imageInfo(file: string, format: "raw" | "qcow2"): Promise<ImageInfo> {
  const out = await tool("qemu-img", ["info", "--output=json", "-f", format, "-U", file], `cannot read ${file}`);
  let j: z.infer<typeof imageInfoSchema>;
  try {
    j = imageInfoSchema.parse(JSON.parse(out));
  } catch (err) {
    throw new QvmError("STORAGE_FAILED", `qemu-img info gave unexpected output for ${file}: ${(err as Error).message.slice(0, 200)}`);
  }
  return {
    virtualSize: j["virtual-size"],
    actualSize: j["actual-size"],
    snapshots: (j.snapshots ?? []).map((s) => ({ name: s.name, date: new Date(s["date-sec"] * 1000).toISOString() })),
  };
}

// ---- internal snapshots: the revisions of a qcow2 volume -------------------------------------

export async function listSnapshots(file: string): Promise<Snapshot[]> {
  return (await imageInfo(file, "qcow2")).snapshots;
}

export function createSnapshot(file: string, name: string): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-c", name, file], `cannot take revision ${name} of ${file}`);
}

export function applySnapshot(file: string, name: string): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-a", name, file], `cannot revert ${file} to ${name}`);
}

export function deleteSnapshot(file: string, name: string): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-d", name, file], `cannot delete revision ${name} of ${file}`);
}
