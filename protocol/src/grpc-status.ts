// Carries QvmError across gRPC: the server sends the status from the code table plus the exact
// code in a trailer; the client rebuilds the same QvmError, so exit codes and messages survive.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { QVM_ERROR_CODES, QvmError, isQvmError, type QvmErrorCode } from "./errors.js";

export const ERROR_CODE_TRAILER = "qvm-error-code";

/** The object a grpc-js handler passes to its callback or `emit("error")`. */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  const e = isQvmError(err) ? err : new QvmError("INTERNAL", (err as Error)?.message ?? String(err));
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, e.code);
  return { code: e.grpcStatus, details: e.message, metadata };
}

/** The QvmError a failed admin call stands for. */
export function fromGrpcError(err: unknown, socketPath: string): QvmError {
  if (isQvmError(err)) return err;
  const e = err as Partial<ServiceError>;
  const code = e.metadata?.get(ERROR_CODE_TRAILER)[0];
  if (typeof code === "string" && Object.hasOwn(QVM_ERROR_CODES, code)) {
    return new QvmError(code as QvmErrorCode, e.details ?? "unknown error");
  }
  if (e.code === status.UNAVAILABLE) {
    return new QvmError("AGENT_UNAVAILABLE", `qvmd is not reachable at ${socketPath}: start it with \`qvm daemon\` (or \`systemctl start qvmd\`), or set QVM_RUNTIME_DIR`, { cause: err });
  }
  if (e.code === status.CANCELLED) return new QvmError("INTERNAL", "the call was cancelled", { cause: err });
  return new QvmError("INTERNAL", `admin call failed: ${e.details ?? e.message ?? String(err)}`, { cause: err });
}
