// Carries QvmError across gRPC: the server sends the status from the code table plus the exact
// code in a trailer; the client rebuilds the same QvmError, so exit codes and messages survive.
// A failure without the trailer did not come from qvmd's handlers: the call never reached qvmd,
// or qvmd did not answer, and the error says so.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { QvmError, isQvmError, isQvmErrorCode } from "./contracts/index.js";

export const ERROR_CODE_TRAILER = "qvm-error-code";

/** The object a grpc-js handler passes to its callback or `emit("error")`. */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  const e = isQvmError(err) ? err : new QvmError("INTERNAL", (err as Error)?.message ?? String(err));
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, e.code);
  return { code: e.grpcStatus, details: e.message, metadata };
}

/** What the client knows about the call that failed, for the words of the error. */
export interface CallContext {
  /** The admin socket the client dialled. */
  socketPath: string;
  /** The call's deadline, when it had one. */
  timeoutMs?: number | undefined;
}

/** The QvmError a failed admin call stands for. */
export function fromGrpcError(err: unknown, call: CallContext): QvmError {
  if (isQvmError(err)) return err;
  const e = err as Partial<ServiceError>;
  const code = e.metadata?.get(ERROR_CODE_TRAILER)[0];
  if (isQvmErrorCode(code)) return new QvmError(code, e.details ?? "unknown error");
  const at = call.socketPath;
  switch (e.code) {
    case status.UNAVAILABLE:
      return new QvmError("DAEMON_UNAVAILABLE", `qvmd is not reachable at ${at}: start it with \`qvm daemon\` (or \`systemctl start qvmd\`), or set QVM_RUNTIME_DIR`, { cause: err });
    case status.DEADLINE_EXCEEDED: {
      const within = call.timeoutMs === undefined ? "in time" : `within ${call.timeoutMs / 1000} s`;
      return new QvmError("DAEMON_UNAVAILABLE", `qvmd at ${at} did not answer ${within}: is it hung? (see its log)`, { cause: err });
    }
    case status.UNIMPLEMENTED:
      return new QvmError("FAILED_PRECONDITION", `qvmd at ${at} does not know this call: it is older than this client; restart it from the same checkout`, { cause: err });
    case status.CANCELLED:
      return new QvmError("INTERNAL", "the call was cancelled", { cause: err });
    default:
      return new QvmError("INTERNAL", `admin call failed: ${e.details ?? e.message ?? String(err)}`, { cause: err });
  }
}
