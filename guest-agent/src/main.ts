// qvm guest agent entry point: serves the GuestAgent gRPC service on a root-only Unix socket and
// bridges vsock port AGENT_VSOCK_PORT (1024) to it.
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { agentV1 } from "@qvm/protocol";
import { AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT } from "@qvm/protocol/contracts";
import { createGuestAgentService, systemPower, AGENT_VERSION } from "./service.js";
import { systemGui } from "./gui/system.js";
import { WindowManager } from "./gui/windows.js";
import { startVsockBridge } from "./vsock-bridge.js";
import { announceReady } from "./ready-signal.js";
import { MAX_MESSAGE_BYTES } from "./limits.js";

const SOCKET = process.env.QVM_AGENT_SOCKET ?? "/run/qvm-agent/agent.sock";
const log = (m: string) => process.stderr.write(`qvm-agent: ${m}\n`);

async function main(): Promise<void> {
  mkdirSync(path.dirname(SOCKET), { recursive: true, mode: 0o700 });
  rmSync(SOCKET, { force: true });
  // socat first: starting it (a fork and exec, slow under emulation) overlaps the server's set-up,
  // and it connects to the socket only per connection (one arriving earlier is closed; the host
  // dials again).
  const bridge = process.env.QVM_AGENT_NO_VSOCK ? undefined : startVsockBridge(AGENT_VSOCK_PORT, SOCKET, log);
  const server = new Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    // The host sends keepalive pings to notice a stalled vsock connection; allow them.
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 1000,
  });
  const windows = new WindowManager(systemGui({ log }), { log });
  server.addService(agentV1.GuestAgentService, createGuestAgentService(systemPower, windows));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${SOCKET}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  chmodSync(SOCKET, 0o600);
  log(`version ${AGENT_VERSION} listening on vsock port ${AGENT_VSOCK_PORT}`);
  if (bridge) announceReady(AGENT_READY_VSOCK_PORT, log);
  const stop = () => {
    windows.killAll();
    bridge?.stop();
    server.forceShutdown();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  log(`fatal: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
