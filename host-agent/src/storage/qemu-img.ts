// qemu-img and mke2fs, the only tools that touch volume files. Converts that make a volume to
// keep run with `-t writeback`: qemu-img's default for convert ("unsafe") never flushes, so a
// power cut after qvm stored the domain could lose the file's data. Every failure becomes a QvmError
// naming the file (STORAGE_FAILED); ENOSPC is reported as a full disk (RESOURCE_EXHAUSTED) so the
// caller can say what to free.
import { spawn } from "node:child_process";
import { closeSync } from "node:fs";
import { execa } from "execa";
import { QvmError } from "@qvm/protocol";
import { z } from "zod";
import { secretFd, secretObject } from "./secret-fd.js";
import { LUKS_ITER_TIME_MS, type VolumeKey } from "./volume-key.js";

/**
 * `key`: the secret qemu-img finds at descriptor 3 (KEY_FD), for the encrypted image it opens;
 * a second one (changing a passphrase) at 4.
 */
async function tool(file: string, args: string[], what: string, key?: VolumeKey, second?: VolumeKey): Promise<string> {
  const fds: number[] = [];
  try {
    for (const k of [key, second]) if (k) fds.push(secretFd(k.base64()));
    return fds.length === 0 ? (await execa(file, args)).stdout : await runWithFds(file, args, fds);
  } catch (err) {
    const e = err as { code?: string; stderr?: string; message: string };
    if (e.code === "ENOENT") throw new QvmError("MISSING_DEPENDENCY", `${file} not found: run \`bash scripts/install-system-deps.sh\``);
    const detail = (e.stderr || e.message).trim().split("\n").slice(-2).join(" ");
    if (/No space left on device/i.test(detail)) throw new QvmError("RESOURCE_EXHAUSTED", `${what}: the disk is full (${detail}); free space and try again`);
    if (/Invalid password, cannot unlock any keyslot/.test(detail)) throw new QvmError("PERMISSION_DENIED", `${what}: wrong passphrase`);
    if (/encrypt\.key-secret' is required/.test(detail)) throw new QvmError("PASSPHRASE_REQUIRED", `${what}: the volume is encrypted and no passphrase was given`);
    throw new QvmError("STORAGE_FAILED", `${what}: ${detail}`, { cause: err });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/**
 * `file args` with descriptors `fds` at 3, 4… (execa takes no descriptor numbers beyond stdio),
 * failing as execa does: an error with the exit code and stderr.
 */
function runWithFds(file: string, args: string[], fds: number[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe", ...fds] });
    let out = "";
    let err = "";
    child.stdout!.on("data", (c: Buffer) => (out = (out + c.toString()).slice(-64 * 1024)));
    child.stderr!.on("data", (c: Buffer) => (err = (err + c.toString()).slice(-64 * 1024)));
    child.once("error", reject);
    child.once("close", (code, signal) => {
      if (code === 0) resolve(out.trimEnd());
      else reject(Object.assign(new Error(`${file} failed (${signal ?? `exit ${code}`})`), { exitCode: code, stderr: err }));
    });
  });
}

// ---- encrypted qcow2 (QEMU's LUKS; the key: storage/volume-key.ts) --------------------------

/** Where qemu-img finds the key: the first descriptor after stdio. */
const KEY_FD = 3;
const KEY_ID = "qvmkey";
const keyObject = ["--object", secretObject(KEY_ID, KEY_FD)];
/** `-o` options that make a new qcow2 file encrypted under the key. */
export const ENCRYPT_OPTIONS = `encrypt.format=luks,encrypt.key-secret=${KEY_ID},encrypt.iter-time=${LUKS_ITER_TIME_MS}`;

/**
 * Making a LUKS header, qemu-img first times PBKDF2 on this CPU (to meet encrypt.iter-time) by
 * the thread's CPU time (getrusage), and fails "Unable to get accurate CPU usage" when a timing
 * reads 0 ms, which happens on a loaded or virtualized host: here about one create in three under
 * parallel tests, and once five in a row. Each failure comes within a few milliseconds and writes
 * nothing, so the create is repeated, after a short pause, up to LUKS_CREATE_ATTEMPTS times.
 */
export async function creatingLuks<T>(make: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await make();
    } catch (err) {
      const e = err as { message?: string; stderr?: unknown };
      const timing = /Unable to get accurate CPU usage/.test(`${e.message ?? ""} ${String(e.stderr ?? "")}`);
      if (attempt >= LUKS_CREATE_ATTEMPTS || !timing) throw err;
      await new Promise((r) => setTimeout(r, 20 * attempt));
    }
  }
}
const LUKS_CREATE_ATTEMPTS = 30;

/** An encrypted qcow2 file as qemu-img's `--image-opts` operand (the key object must be given too). */
function keyedImage(file: string): string[] {
  return ["--image-opts", `driver=qcow2,file.filename=${file.replaceAll(",", ",,")},encrypt.key-secret=${KEY_ID}`];
}

/** A new encrypted, empty ext4 volume (the raw scratch holds only a fresh filesystem: no data). */
export async function createEncryptedExt4Qcow2(file: string, sizeMiB: number, label: string, scratch: string, key: VolumeKey): Promise<void> {
  await tool("mke2fs", ["-q", "-t", "ext4", "-L", label, "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", scratch, `${sizeMiB}M`], `cannot format ${scratch}`);
  await creatingLuks(() => tool("qemu-img", ["convert", "-q", "-t", "writeback", ...keyObject, "-f", "raw", "-O", "qcow2", "-o", ENCRYPT_OPTIONS, scratch, file], `cannot create ${file}`, key));
}

/** Fails with PERMISSION_DENIED unless `key` unlocks the encrypted volume (reads its header only). */
export function checkKey(file: string, key: VolumeKey): Promise<string> {
  return tool("qemu-img", ["snapshot", "-l", "-U", ...keyObject, ...keyedImage(file)], `cannot unlock ${file}`, key);
}

/** The second key's descriptor and id (changing a passphrase: the old key opens, the new one is added). */
const NEW_KEY_ID = "qvmnewkey";
const newKeyObject = ["--object", secretObject(NEW_KEY_ID, KEY_FD + 1)];

/** Adds a LUKS key slot for `newKey` to a volume `key` opens (both then open it). */
export function addKeySlot(file: string, key: VolumeKey, newKey: VolumeKey): Promise<string> {
  return creatingLuks(() => tool("qemu-img", ["amend", "-q", ...keyObject, ...newKeyObject, "-o", `encrypt.state=active,encrypt.new-secret=${NEW_KEY_ID},encrypt.iter-time=${LUKS_ITER_TIME_MS}`, ...keyedImage(file)], `cannot add a key to ${file}`, key, newKey));
}

/** Removes every LUKS key slot `oldKey` opens, from a volume `key` opens (another slot). */
export function removeKeySlots(file: string, key: VolumeKey, oldKey: VolumeKey): Promise<string> {
  return tool("qemu-img", ["amend", "-q", ...keyObject, ...newKeyObject, "-o", `encrypt.state=inactive,encrypt.old-secret=${NEW_KEY_ID}`, ...keyedImage(file)], `cannot remove the old key of ${file}`, key, oldKey);
}

/** An encrypted overlay over `backing` (read in clear: a template's root), under `key`. */
export function createEncryptedOverlay(backing: string, overlay: string, key: VolumeKey): Promise<string> {
  return creatingLuks(() => tool("qemu-img", ["create", "-q", ...keyObject, "-f", "qcow2", "-o", ENCRYPT_OPTIONS, "-F", "raw", "-b", backing, overlay], `cannot create ${overlay}`, key));
}

/**
 * An encrypted volume's revision `snapshot` as a new encrypted qcow2 file under the same key:
 * ciphertext in, ciphertext out (a backup of a running encrypted domain). `-U`: the VMM has it open.
 */
export function copyEncryptedRevision(file: string, snapshot: string, out: string, key: VolumeKey): Promise<string> {
  return creatingLuks(() => tool("qemu-img", ["convert", "-q", "-U", ...keyObject, "-l", `snapshot.name=${snapshot}`, ...keyedImage(file), "-O", "qcow2", "-o", ENCRYPT_OPTIONS, out], `cannot read ${file} at revision ${snapshot}`, key));
}

/** A qcow2 file that records changes over `backing`; the backing file is never written. */
export function createOverlay(backing: string, overlay: string, backingFormat: "raw" | "qcow2" = "raw"): Promise<string> {
  return tool("qemu-img", ["create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, overlay], `cannot create ${overlay}`);
}

/** A fresh ext4 filesystem of `sizeMiB` in a qcow2 file (formatted raw, then converted: only used blocks are stored). */
export async function createExt4Qcow2(file: string, sizeMiB: number, label: string, scratch: string): Promise<void> {
  await tool("mke2fs", ["-q", "-t", "ext4", "-L", label, "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", scratch, `${sizeMiB}M`], `cannot format ${scratch}`);
  await tool("qemu-img", ["convert", "-q", "-t", "writeback", "-f", "raw", "-O", "qcow2", scratch, file], `cannot create ${file}`);
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
  return tool("qemu-img", ["convert", "-q", "-t", "writeback", "-f", "raw", "-O", "qcow2", raw, out], `cannot write ${out}`);
}

/** `qemu-img map` of a raw file, as JSON text: where it has data and where holes. */
export function mapRaw(file: string): Promise<string> {
  return tool("qemu-img", ["map", "--output=json", "-f", "raw", file], `cannot map ${file}`);
}

export function copyQcow2(src: string, out: string): Promise<string> {
  return tool("qemu-img", ["convert", "-q", "-t", "writeback", "-f", "qcow2", "-O", "qcow2", src, out], `cannot copy ${src}`);
}

export function resizeImage(file: string, format: "raw" | "qcow2", sizeBytes: number, key?: VolumeKey): Promise<string> {
  const image = key ? [...keyObject, ...keyedImage(file)] : ["-f", format, file];
  return tool("qemu-img", ["resize", "-q", ...image, String(sizeBytes)], `cannot resize ${file}`, key);
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
  /** A qcow2 file with LUKS encryption (its content needs the key). */
  encrypted: boolean;
}

/** The part of `qemu-img info --output=json` qvm reads; other fields vary by QEMU version. */
const imageInfoSchema = z.object({
  "virtual-size": z.number().int().nonnegative(),
  "actual-size": z.number().int().nonnegative(),
  snapshots: z.array(z.object({ name: z.string(), "date-sec": z.number() })).optional(),
  encrypted: z.boolean().optional(),
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
    encrypted: j.encrypted === true,
  };
}

// ---- internal snapshots: the revisions of a qcow2 volume -------------------------------------

export async function listSnapshots(file: string): Promise<Snapshot[]> {
  return (await imageInfo(file, "qcow2")).snapshots;
}

/** The operand of a snapshot command: the file, or for an encrypted one its key and image options. */
const snapshotImage = (file: string, key?: VolumeKey): string[] => (key ? [...keyObject, ...keyedImage(file)] : [file]);

export function createSnapshot(file: string, name: string, key?: VolumeKey): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-c", name, ...snapshotImage(file, key)], `cannot take revision ${name} of ${file}`, key);
}

export function applySnapshot(file: string, name: string, key?: VolumeKey): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-a", name, ...snapshotImage(file, key)], `cannot revert ${file} to ${name}`, key);
}

export function deleteSnapshot(file: string, name: string, key?: VolumeKey): Promise<string> {
  return tool("qemu-img", ["snapshot", "-q", "-d", name, ...snapshotImage(file, key)], `cannot delete revision ${name} of ${file}`, key);
}
