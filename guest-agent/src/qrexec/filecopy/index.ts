// File-copy stream library: packPaths (qvm-copy / qvm-move) and unpackStream (qubes.Filecopy).
export { FilecopyError, type FilecopyErrorCode } from "./errors.js";
export * from "./format.js";
export { validateLinkTarget, validateName } from "./names.js";
export { packPaths, type PackOptions } from "./pack.js";
export { DEFAULT_MAX_COPY_BYTES, RECEIVED_MODE_MASK, unpackStream, type CopyStats, type UnpackOptions } from "./unpack.js";
export { quoteText, unsafeCharacter } from "./text.js";
