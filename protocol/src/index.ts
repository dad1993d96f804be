// The protocol package: generated gRPC code for every .proto, the qrexec channel's framing, and the
// one error type shared by every component with its mapping onto gRPC. Nothing else belongs here.
export * as agentV1 from "./gen/qvm/agent/v1/agent.js";
export * as adminV1 from "./gen/qvm/admin/v1/admin.js";
export { QvmError, type QvmErrorCode, QVM_ERROR_CODES, isQvmError } from "./errors.js";
export { toGrpcError, fromGrpcError, ERROR_CODE_TRAILER } from "./grpc-status.js";
export { DEFAULT_RUNTIME_DIR, DEFAULT_DATA_DIR, ADMIN_SOCKET_NAME, ADMIN_GROUP, runtimeDirFromEnv, adminSocketPath } from "./paths.js";
export { AdminClient, type AdminExecStream } from "./admin-client.js";
export { LABELS, LABEL_NAMES, isLabel, type Label } from "./labels.js";
export * from "./qrexec.js";
