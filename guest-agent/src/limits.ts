// Bounds the guest agent enforces on what it accepts and sends. The host enforces its own,
// stricter view of what it receives (host-agent/src/agent/limits.ts). What both sides must agree
// on (the vsock port, the signals a caller may send) is in @qvm/protocol/contracts.
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Largest stdout/stderr chunk sent in one ExecResponse. */
export const MAX_OUTPUT_CHUNK_BYTES = 64 * 1024;
export const MAX_ARGV_ITEMS = 4096;
export const MAX_ENV_ITEMS = 1024;
export const MAX_CONCURRENT_EXECS = 256;
