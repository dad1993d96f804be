// The protocol package: generated gRPC code for every .proto, the qrexec channel's framing, the
// shared contracts (contracts/: errors, names, signals, ports, directories, words, the web-shell
// schema) and their gRPC side: the error mapping, the admin client and the enum words. Nothing
// else belongs here. Clients that must not load gRPC import "@qvm/protocol/contracts",
// "@qvm/protocol/labels" or "@qvm/protocol/qrexec" alone.
export * as agentV1 from "./gen/qvm/agent/v1/agent.js";
export * as adminV1 from "./gen/qvm/admin/v1/admin.js";
// The contracts (contracts/index.ts is their surface), file by file less the web shell's schema:
// only the web shell needs that, and its zod must not load with every CLI command.
export * from "./contracts/errors.js";
export * from "./contracts/names.js";
export * from "./contracts/services.js";
export * from "./contracts/signals.js";
export * from "./contracts/ports.js";
export * from "./contracts/dirs.js";
export * from "./contracts/words.js";
export { toGrpcError, fromGrpcError, ERROR_CODE_TRAILER, type CallContext } from "./grpc-status.js";
export { runtimeDirFromEnv, adminSocketPath } from "./paths.js";
export { AdminClient, ADMIN_UNARY_CALLS, type AdminCallOptions, type AdminCalls, type AdminExecStream, type AdminMethod } from "./admin-client.js";
export {
  domainClassFromWord,
  domainClassWord,
  domainInWords,
  eventTypeFromWord,
  eventTypeWord,
  policyActionFromWord,
  policyActionWord,
  powerStateFromWord,
  powerStateWord,
  type DomainInWords,
} from "./admin-words.js";
export { LABELS, LABEL_NAMES, isLabel, type Label } from "./labels.js";
export * from "./qrexec.js";
