// Naming what is wrong with a vault's structure. A reader normally never walks the file: the
// trailer points at the manifest and the manifest lists every chunk's offset. When that fails (no
// trailer, a trailer that does not fit the file, a frame that is not where the manifest says) this
// walks the frame headers from the start, following their lengths, and says what it finds: where
// the file was cut, which chunk is missing, repeated, out of place or from another backup, which
// frame header is damaged. Needs no keys: every claim here comes from the plaintext frame
// headers, whose own checksums rule out most random damage; the AEAD still decides authenticity.
import { TAG_SIZE } from "./vault-crypto.js";
import { VaultError, type VaultLocation } from "./vault-errors.js";
import type { VaultFile } from "./vault-file.js";
import {
  decodeFrameHeader,
  decodeTrailer,
  FRAME_HEADER_SIZE,
  FRAME_KIND,
  HEADER_SIZE,
  maxChunkPayload,
  TRAILER_SIZE,
  type FrameHeader,
  type VaultHeader,
} from "./vault-format.js";
import { MAX_MANIFEST_BYTES } from "./vault-manifest.js";

interface Walked {
  offset: number;
  frame: FrameHeader;
}

export interface LayoutHints {
  /** Entry and block of a chunk, when the manifest is known, for messages. */
  locate?: (chunk: number) => { entry: string; block: number } | undefined;
  /** Where an intact trailer says the manifest frame is: a damaged frame header there is the manifest's. */
  manifestOffset?: number;
}

const hexId = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/**
 * Walks the file and returns the first structural problem, in file order, or undefined when the
 * walk finds a complete, consistent file (header, chunks 0…n-1 in order, the manifest frame, a
 * trailer that points at it).
 */
export async function diagnoseLayout(file: VaultFile, header: VaultHeader, hints: LayoutHints = {}): Promise<VaultError | undefined> {
  const ours = header.backupId;
  const where = (offset: number, chunk?: number): VaultLocation => {
    const at = chunk === undefined ? undefined : hints.locate?.(chunk);
    return { file: file.name, offset, ...(chunk === undefined ? {} : { chunk }), ...(at ?? {}) };
  };
  const chunkName = (chunk: number): string => {
    const at = hints.locate?.(chunk);
    return at === undefined ? `chunk ${chunk}` : `chunk ${chunk} (block ${at.block} of "${at.entry}")`;
  };

  // 1. Walk the frames until the manifest frame, the end of the file or a damaged frame header.
  const frames: Walked[] = [];
  let manifest: Walked | undefined;
  let end: VaultError | undefined;
  let pos = HEADER_SIZE;
  for (;;) {
    const k = frames.length;
    if (pos === file.size) {
      end = new VaultError("truncated", `the file ends at offset ${pos}, after ${k} chunks, where the manifest should begin`, where(pos));
      break;
    }
    if (file.size - pos < FRAME_HEADER_SIZE) {
      end = new VaultError("truncated", `the file ends at offset ${file.size}, inside the frame header at offset ${pos} (after ${k} chunks)`, where(pos));
      break;
    }
    const frame = decodeFrameHeader(await file.read(pos, FRAME_HEADER_SIZE));
    if (typeof frame === "string" && pos === hints.manifestOffset) {
      end = new VaultError("manifest-corrupt", `the manifest's frame header at offset ${pos} is damaged: ${frame}`, where(pos));
      break;
    }
    if (typeof frame === "string") {
      end = new VaultError("chunk-corrupt", `the frame header of ${chunkName(k)} at offset ${pos} (the one after ${k} intact chunks) is damaged: ${frame}`, where(pos, k));
      break;
    }
    const isManifest = frame.kind === FRAME_KIND.manifest;
    if (isManifest && frame.payloadLength > MAX_MANIFEST_BYTES + TAG_SIZE) {
      end = new VaultError("manifest-too-large", `the manifest frame at offset ${pos} declares ${frame.payloadLength} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`, where(pos));
      break;
    }
    if (!isManifest && frame.payloadLength > maxChunkPayload(header.blockSize)) {
      end = new VaultError(
        "chunk-corrupt",
        `the frame at offset ${pos} declares ${frame.payloadLength} bytes, more than a ${header.blockSize}-byte block can take`,
        where(pos, frame.index),
      );
      break;
    }
    const next = pos + FRAME_HEADER_SIZE + frame.payloadLength;
    if (next > file.size) {
      const what = isManifest ? "the manifest" : chunkName(frame.index);
      end = new VaultError("truncated", `the file ends at offset ${file.size}, inside ${what}, whose frame at offset ${pos} runs to ${next}`, where(pos, isManifest ? undefined : frame.index));
      break;
    }
    if (isManifest) {
      manifest = { offset: pos, frame };
      pos = next;
      break;
    }
    frames.push({ offset: pos, frame });
    pos = next;
  }

  // 2. The chunks seen, in order: each from this backup and at its own position. The first
  //    anomaly in file order wins (it comes before wherever the walk stopped).
  const sequence = sequenceProblem(frames, ours, chunkName, where);
  if (sequence !== undefined) return sequence;
  if (end !== undefined) return end;
  if (manifest === undefined) return undefined; // unreachable: the walk ends with one or the other

  if (!manifest.frame.backupId.equals(ours)) {
    return new VaultError("chunk-foreign", `the manifest frame at offset ${manifest.offset} belongs to backup ${hexId(manifest.frame.backupId)}, not to this backup ${hexId(ours)}`, where(manifest.offset));
  }
  const expected = manifest.frame.index;
  if (expected > frames.length) {
    const list = expected - frames.length === 1 ? `chunk ${frames.length} is` : `chunks ${frames.length}…${expected - 1} are`;
    return new VaultError("chunk-missing", `${list} missing: the manifest counts ${expected} chunks and the file ends them at offset ${manifest.offset}`, where(manifest.offset, frames.length));
  }
  if (expected < frames.length) {
    const extra = frames[expected]!;
    return new VaultError("chunk-foreign", `the file holds ${frames.length} chunks but its manifest counts ${expected}: the chunks from offset ${extra.offset} on were added`, where(extra.offset, expected));
  }

  // 3. The trailer after the manifest frame.
  const rest = file.size - pos;
  if (rest < TRAILER_SIZE) {
    return new VaultError("truncated", `the file ends at offset ${file.size}, ${rest === 0 ? "where the trailer should begin" : "inside the trailer"} (offset ${pos}, ${TRAILER_SIZE} bytes)`, where(pos));
  }
  const trailer = decodeTrailer(await file.read(pos, TRAILER_SIZE));
  if (trailer === undefined) return new VaultError("trailer-corrupt", `the trailer at offset ${pos} is damaged (wrong magic or checksum)`, where(pos));
  if (rest > TRAILER_SIZE) return new VaultError("trailing-data", `${rest - TRAILER_SIZE} bytes follow the trailer, which ends at offset ${pos + TRAILER_SIZE}`, where(pos + TRAILER_SIZE));
  if (
    trailer.manifestOffset !== manifest.offset ||
    trailer.manifestLength !== FRAME_HEADER_SIZE + manifest.frame.payloadLength ||
    trailer.chunkCount !== expected ||
    !trailer.backupId.equals(ours)
  ) {
    return new VaultError("trailer-corrupt", `the trailer at offset ${pos} does not describe this file (it points at a manifest at ${trailer.manifestOffset}, the manifest is at ${manifest.offset})`, where(pos));
  }
  return undefined;
}

/** Foreign, duplicated, reordered or missing chunks among the frames walked, the first in file order. */
function sequenceProblem(
  frames: Walked[],
  ours: Buffer,
  chunkName: (c: number) => string,
  where: (offset: number, chunk?: number) => VaultLocation,
): VaultError | undefined {
  const firstSeen = new Map<number, number>(); // chunk index → offset where it was first seen
  for (let k = 0; k < frames.length; k++) {
    const { offset, frame } = frames[k]!;
    if (!frame.backupId.equals(ours)) {
      return new VaultError(
        "chunk-foreign",
        `the frame at offset ${offset}, in the place of ${chunkName(k)}, is chunk ${frame.index} of backup ${hexId(frame.backupId)}, not of this backup ${hexId(ours)}`,
        where(offset, k),
      );
    }
    if (frame.index !== k) {
      const earlier = firstSeen.get(frame.index);
      if (earlier !== undefined) {
        return new VaultError("chunk-duplicated", `${chunkName(frame.index)} appears again at offset ${offset} (first at offset ${earlier}), in the place of ${chunkName(k)}`, where(offset, k));
      }
      const later = frames.findIndex((f, j) => j > k && f.frame.index === k && f.frame.backupId.equals(ours));
      if (later >= 0) {
        return new VaultError(
          "chunk-reordered",
          `the chunks are out of order: offset ${offset} holds ${chunkName(frame.index)} where ${chunkName(k)} belongs, and ${chunkName(k)} is at offset ${frames[later]!.offset}`,
          where(offset, k),
        );
      }
      return new VaultError("chunk-missing", `${chunkName(k)} is missing: offset ${offset}, where it belongs, holds ${chunkName(frame.index)}`, where(offset, k));
    }
    firstSeen.set(frame.index, offset);
  }
  return undefined;
}
