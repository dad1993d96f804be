// The protocol package: generated gRPC code for every .proto, and the one error type shared by
// every component. Nothing else belongs here.
export * as agentV1 from "./gen/qvm/agent/v1/agent.js";
export { QvmError, type QvmErrorCode, QVM_ERROR_CODES, isQvmError } from "./errors.js";
