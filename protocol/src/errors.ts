// One error type for all of qvm, with a closed set of codes. Each code maps in one table to a
// gRPC status (admin API), a CLI exit code and an HTTP status (web shell), so every layer
// translates errors the same way. Messages say what failed and what to do about it.
import { status as GrpcStatus } from "@grpc/grpc-js";

export const QVM_ERROR_CODES = {
  // The caller asked for something malformed or impossible.
  INVALID_ARGUMENT: { grpc: GrpcStatus.INVALID_ARGUMENT, exit: 2, http: 400 },
  NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, exit: 1, http: 404 },
  ALREADY_EXISTS: { grpc: GrpcStatus.ALREADY_EXISTS, exit: 1, http: 409 },
  // The request is valid but the object is in the wrong state (e.g. already running).
  FAILED_PRECONDITION: { grpc: GrpcStatus.FAILED_PRECONDITION, exit: 1, http: 409 },
  PERMISSION_DENIED: { grpc: GrpcStatus.PERMISSION_DENIED, exit: 1, http: 403 },
  // Something qvm needs on the host is absent: a package, an image, a kernel bundle.
  MISSING_DEPENDENCY: { grpc: GrpcStatus.FAILED_PRECONDITION, exit: 1, http: 500 },
  // A VMM or helper process failed or died.
  VMM_FAILED: { grpc: GrpcStatus.INTERNAL, exit: 1, http: 502 },
  // The guest agent did not answer in time.
  AGENT_TIMEOUT: { grpc: GrpcStatus.DEADLINE_EXCEEDED, exit: 1, http: 504 },
  // The guest sent something oversized, malformed or out of protocol.
  AGENT_PROTOCOL: { grpc: GrpcStatus.DATA_LOSS, exit: 1, http: 502 },
  // The guest agent is unreachable (domain not running, connection lost).
  AGENT_UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, exit: 1, http: 503 },
  // State on disk is unreadable or inconsistent; nothing was overwritten.
  CORRUPT_STATE: { grpc: GrpcStatus.DATA_LOSS, exit: 1, http: 500 },
  IMAGE_BUILD_FAILED: { grpc: GrpcStatus.INTERNAL, exit: 1, http: 500 },
  INTERNAL: { grpc: GrpcStatus.INTERNAL, exit: 1, http: 500 },
} as const;

export type QvmErrorCode = keyof typeof QVM_ERROR_CODES;

export class QvmError extends Error {
  override readonly name = "QvmError";
  constructor(
    readonly code: QvmErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get grpcStatus(): GrpcStatus {
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
