// Maps grpc-js call failures on the agent channel to QvmError. Details strings come from the
// guest (or from grpc-js reporting on guest bytes), so they are quoted and clipped.
import { status, type ServiceError } from "@grpc/grpc-js";
import { QvmError } from "@qvm/protocol";
import { quoteGuestText } from "./replies.js";

export function agentCallError(err: unknown, what: string, socketPath: string): QvmError {
  if (err instanceof QvmError) return err;
  const e = err as Partial<ServiceError>;
  const details = quoteGuestText(String(e.details ?? e.message ?? "unknown error"));
  switch (e.code) {
    case status.DEADLINE_EXCEEDED:
      return new QvmError("AGENT_TIMEOUT", `guest agent did not answer ${what} in time`, { cause: err });
    case status.UNAVAILABLE:
      return new QvmError("AGENT_UNAVAILABLE", `guest agent unreachable through ${socketPath} during ${what}: ${details}`, { cause: err });
    case status.RESOURCE_EXHAUSTED:
      return new QvmError("AGENT_PROTOCOL", `guest agent sent an oversized message during ${what}: ${details}`, { cause: err });
    case status.INTERNAL:
    case status.UNIMPLEMENTED:
    case status.DATA_LOSS:
      return new QvmError("AGENT_PROTOCOL", `guest agent broke the protocol during ${what}: ${details}`, { cause: err });
    case status.INVALID_ARGUMENT:
      return new QvmError("INVALID_ARGUMENT", `guest agent refused ${what}: ${details}`, { cause: err });
    case status.NOT_FOUND:
      return new QvmError("NOT_FOUND", `guest agent: ${details}`, { cause: err });
    case status.CANCELLED:
      return new QvmError("AGENT_UNAVAILABLE", `${what} was cancelled`, { cause: err });
    default:
      return new QvmError("AGENT_PROTOCOL", `guest agent failed ${what}: ${details}`, { cause: err });
  }
}
