// The one error type the receiver throws. Names in messages come from the (hostile) sender, so
// they are always quoted (JSON, with C1, bidi and other format characters escaped too) and
// clipped: no terminal escapes, no reordered text, no megabyte-long log lines.
import { quoteText } from "./text.js";

export type FilecopyErrorCode =
  | "BAD_HEADER" // malformed framing: unknown kind, oversized length fields, trailing bytes
  | "BAD_NAME" // entry name breaks the name rules, or its parent was not sent as a directory
  | "BAD_SYMLINK" // link target empty, too long, not UTF-8, or contains NUL
  | "SYMLINK_ESCAPE" // link target is absolute or may resolve outside its top-level entry
  | "EXISTS" // destination already holds something we must not replace
  | "TRUNCATED" // stream ended inside an entry or before the end marker
  | "TOO_LARGE" // maxFiles or maxBytes exceeded
  | "BAD_ROOT" // destination folder is a symlink or not a directory
  | "IO"; // the filesystem refused an operation (ENOSPC, ENAMETOOLONG, ...)

export class FilecopyError extends Error {
  override name = "FilecopyError";
  constructor(
    readonly code: FilecopyErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const CLIP = 200;

/** Quotes an attacker-controlled name (string or raw bytes) for an error message. */
export function quoteName(name: string | Uint8Array): string {
  const s = quoteText(typeof name === "string" ? name : Buffer.from(name).toString("utf8"));
  return s.length > CLIP ? `${s.slice(0, CLIP)}…(${s.length} chars)` : s;
}
