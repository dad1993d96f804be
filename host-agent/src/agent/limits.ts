// What the host accepts from a guest agent. A guest is untrusted: every reply is bounded here and
// validated in agent/replies.ts before anything else sees it. The port is the contract both sides
// are built from (@qvm/protocol/contracts), re-exported for the modules that dial it.
export { AGENT_VSOCK_PORT } from "@qvm/protocol/contracts";
/** gRPC refuses any single message from the guest larger than this. */
export const MAX_AGENT_MESSAGE_BYTES = 256 * 1024;
/** Largest stdout/stderr chunk accepted in one message (the agent sends at most 64 KiB). */
export const MAX_OUTPUT_CHUNK_BYTES = 128 * 1024;
export const MAX_SHORT_STRING = 256;
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
export const DEFAULT_AGENT_READY_TIMEOUT_MS = 120_000;
/** How much guest text may appear in an error message shown to a person. */
export const MAX_GUEST_TEXT_IN_ERRORS = 200;
