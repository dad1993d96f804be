// Framing of the qrexec call channel (docs/qrexec-protocol.md), shared by qvmd and the in-domain
// tools: each frame is a type byte, a big-endian u32 length and the payload. A zero-length data
// frame is EOF for that stream, as in Qubes' MSG_DATA_* messages.
/** The vsock port a domain calls the host on for qrexec (CID 2); a contract of its own, re-exported with the framing. */
export { QREXEC_VSOCK_PORT } from "./contracts/ports.js";

/** A frame that breaks the rules: the channel is dropped (a protocol fault, not a QvmError to report). */
export class FrameError extends Error {}

/** Largest payload of one frame (Qubes' protocol v3 uses 64 KiB chunks too). */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Largest REQUEST payload: names and argument are short. */
export const MAX_REQUEST_BYTES = 1024;
/** The exit code a refused call reports, as Qubes' qrexec-client-vm does. */
export const EXIT_REFUSED = 126;
/** The exit code of a service that does not exist in the target. */
export const EXIT_NO_SERVICE = 127;

export const FrameType = {
  /** caller → host: the CallRequest; the first frame and only once. */
  REQUEST: 0x01,
  /** host → caller: one byte, 1 accepted and connected, 0 refused. Nothing else is said. */
  RESULT: 0x02,
  /** caller → service stdin; empty = EOF. */
  STDIN: 0x10,
  /** service stdout → caller; empty = EOF. */
  STDOUT: 0x11,
  /** service stderr → caller; empty = EOF. */
  STDERR: 0x12,
  /** host → caller: 4 bytes, the service's exit code (big-endian i32); the last frame. */
  EXIT: 0x13,
  /**
   * Exec data channel only, helper → host: 4 bytes, a big-endian u32 count of stdin payload bytes
   * the helper has written to the program (or dropped, its stdin being closed) since its last ack.
   * The host keeps at most the window ExecStarted.stdin_window names unacknowledged.
   */
  STDIN_ACK: 0x14,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];
const KNOWN = new Set<number>(Object.values(FrameType));

export const FRAME_HEADER_BYTES = 5;

export interface Frame {
  type: FrameTypeValue;
  payload: Buffer;
}

export function encodeFrame(type: FrameTypeValue, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new FrameError(`frame payload of ${payload.length} bytes is larger than ${MAX_FRAME_PAYLOAD}`);
  const b = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  b.writeUInt8(type, 0);
  b.writeUInt32BE(payload.length, 1);
  b.set(payload, FRAME_HEADER_BYTES);
  return b;
}

/** Splits a large buffer into data frames of at most MAX_FRAME_PAYLOAD bytes. */
export function encodeData(type: FrameTypeValue, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += MAX_FRAME_PAYLOAD) out.push(encodeFrame(type, data.subarray(off, off + MAX_FRAME_PAYLOAD)));
  return out;
}

export function encodeExit(code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeInt32BE(code);
  return encodeFrame(FrameType.EXIT, p);
}

/**
 * Incremental decoder: push() bytes as they arrive, get whole frames back. A frame of an unknown
 * type or a length over the limit throws: the peer is garbled or hostile and the channel is
 * dropped. At most one frame's worth of bytes is ever buffered.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxPayload = MAX_FRAME_PAYLOAD) {}

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.buf.length >= FRAME_HEADER_BYTES) {
      const type = this.buf.readUInt8(0);
      const len = this.buf.readUInt32BE(1);
      if (!KNOWN.has(type)) throw new FrameError(`unknown frame type 0x${type.toString(16)}`);
      if (len > this.maxPayload) throw new FrameError(`frame of ${len} bytes is larger than ${this.maxPayload}`);
      if (this.buf.length < FRAME_HEADER_BYTES + len) break;
      frames.push({ type: type as FrameTypeValue, payload: Buffer.from(this.buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len)) });
      this.buf = this.buf.subarray(FRAME_HEADER_BYTES + len);
    }
    return frames;
  }

  /** Bytes of an incomplete frame still held. */
  get pending(): number {
    return this.buf.length;
  }
}
