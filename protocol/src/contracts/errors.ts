// One error type for all of qvm, with a closed set of codes. Each code maps in one table to a
// gRPC status (admin API), a CLI exit code and an HTTP status (web shell), so every layer
// translates errors the same way. Messages say what failed and what to do about it.
// Free of grpc-js (grpc-status.ts carries these errors over gRPC), so the CLI at start-up and
// the web page can use the same type.

// gRPC status numbers, fixed by the gRPC spec (doc/statuscodes.md); errors.test.ts checks them
// against grpc-js.
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_NOT_FOUND = 5;
const GRPC_ALREADY_EXISTS = 6;
const GRPC_PERMISSION_DENIED = 7;
const GRPC_RESOURCE_EXHAUSTED = 8;
const GRPC_FAILED_PRECONDITION = 9;
const GRPC_INTERNAL = 13;
const GRPC_UNAVAILABLE = 14;
const GRPC_DATA_LOSS = 15;
const GRPC_UNAUTHENTICATED = 16;

/** The CLI's exit codes: 2 for a request the caller got wrong (usage), 1 for every other failure. */
const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

export const QVM_ERROR_CODES = {
  // The caller asked for something malformed or impossible.
  INVALID_ARGUMENT: { grpc: GRPC_INVALID_ARGUMENT, exit: EXIT_USAGE, http: 400 },
  NOT_FOUND: { grpc: GRPC_NOT_FOUND, exit: EXIT_FAILURE, http: 404 },
  ALREADY_EXISTS: { grpc: GRPC_ALREADY_EXISTS, exit: EXIT_FAILURE, http: 409 },
  // The request is valid but the object is in the wrong state (e.g. already running).
  FAILED_PRECONDITION: { grpc: GRPC_FAILED_PRECONDITION, exit: EXIT_FAILURE, http: 409 },
  PERMISSION_DENIED: { grpc: GRPC_PERMISSION_DENIED, exit: EXIT_FAILURE, http: 403 },
  // The request needs a secret it did not carry: an encrypted domain's passphrase. The CLI and
  // the web shell ask for it and send the request again; a wrong one is PERMISSION_DENIED.
  PASSPHRASE_REQUIRED: { grpc: GRPC_UNAUTHENTICATED, exit: EXIT_FAILURE, http: 401 },
  // A limit was reached: the disk is full, too many terminals are open.
  RESOURCE_EXHAUSTED: { grpc: GRPC_RESOURCE_EXHAUSTED, exit: EXIT_FAILURE, http: 429 },
  // Something qvm needs on the host is absent: a package, an image, a kernel bundle, a build.
  MISSING_DEPENDENCY: { grpc: GRPC_FAILED_PRECONDITION, exit: EXIT_FAILURE, http: 500 },
  // qvmd is not reachable or does not answer (set by clients; qvmd never sends it).
  DAEMON_UNAVAILABLE: { grpc: GRPC_UNAVAILABLE, exit: EXIT_FAILURE, http: 503 },
  // A VMM or helper process failed or died.
  VMM_FAILED: { grpc: GRPC_INTERNAL, exit: EXIT_FAILURE, http: 502 },
  // A volume tool (qemu-img, mke2fs, cp) failed on a volume file.
  STORAGE_FAILED: { grpc: GRPC_INTERNAL, exit: EXIT_FAILURE, http: 500 },
  // The guest agent did not answer in time.
  AGENT_TIMEOUT: { grpc: GRPC_DEADLINE_EXCEEDED, exit: EXIT_FAILURE, http: 504 },
  // The guest sent something oversized, malformed or out of protocol.
  AGENT_PROTOCOL: { grpc: GRPC_DATA_LOSS, exit: EXIT_FAILURE, http: 502 },
  // The guest agent is unreachable (domain not running, connection lost).
  AGENT_UNAVAILABLE: { grpc: GRPC_UNAVAILABLE, exit: EXIT_FAILURE, http: 503 },
  // The qrexec policy files have an error (named by file and line): every call is refused until
  // it is fixed. Not a usage error: the request was fine, the host's configuration is not.
  POLICY_INVALID: { grpc: GRPC_FAILED_PRECONDITION, exit: EXIT_FAILURE, http: 500 },
  // State on disk is unreadable or inconsistent; nothing was overwritten.
  CORRUPT_STATE: { grpc: GRPC_DATA_LOSS, exit: EXIT_FAILURE, http: 500 },
  IMAGE_BUILD_FAILED: { grpc: GRPC_INTERNAL, exit: EXIT_FAILURE, http: 500 },
  INTERNAL: { grpc: GRPC_INTERNAL, exit: EXIT_FAILURE, http: 500 },
} as const satisfies Record<string, { grpc: number; exit: number; http: number }>;

export type QvmErrorCode = keyof typeof QVM_ERROR_CODES;

export function isQvmErrorCode(v: unknown): v is QvmErrorCode {
  return typeof v === "string" && Object.hasOwn(QVM_ERROR_CODES, v);
}

export class QvmError extends Error {
  override readonly name = "QvmError";
  constructor(
    readonly code: QvmErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get grpcStatus(): number {
    return QVM_ERROR_CODES[this.code].grpc;
  }

  get exitCode(): number {
    return QVM_ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return QVM_ERROR_CODES[this.code].http;
  }
}

export function isQvmError(err: unknown, code?: QvmErrorCode): err is QvmError {
  return err instanceof QvmError && (code === undefined || err.code === code);
}
