// The vsock ports a domain and the host meet on. Both sides are built from these constants: the
// guest agent listens on AGENT_VSOCK_PORT and qvmd dials it; the in-domain qrexec tools call the
// host (CID 2) on QREXEC_VSOCK_PORT, where qvmd's per-domain router listens.

/** The guest agent's gRPC service (protocol/proto/qvm/agent/v1). */
export const AGENT_VSOCK_PORT = 1024;
/** The qrexec call channel (protocol/src/qrexec-wire.ts, docs/qrexec-protocol.md). */
export const QREXEC_VSOCK_PORT = 50;
/** Exec data channels: a domain's qvm-exec-data connects here with the cookie of its Exec. */
export const EXEC_DATA_VSOCK_PORT = 51;
/**
 * The guest agent connects here once when it has started: qvmd dials the agent only after that, as
 * vhost-device-vsock 0.3 loses the domain's vsock for good when the host connects while the guest
 * driver is still setting up (host-agent/src/vsock/guest-ready.ts).
 */
export const AGENT_READY_VSOCK_PORT = 52;
