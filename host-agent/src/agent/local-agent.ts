// Serves a GuestAgent implementation on a Unix socket in a temporary directory and connects an
// AgentClient to it: the real gRPC path without a VM, for integration tests and fakes.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { agentV1 } from "@qvm/protocol";
import { AgentClient } from "./agent-client.js";

export interface LocalAgent {
  client: AgentClient;
  close(): void;
}

export async function serveLocalAgent(impl: agentV1.GuestAgentServer, callTimeoutMs = 5000): Promise<LocalAgent> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-agent-"));
  const socket = path.join(dir, "agent.sock");
  const server = new Server();
  server.addService(agentV1.GuestAgentService, impl);
  await new Promise<void>((res, rej) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  const client = new AgentClient(socket, callTimeoutMs);
  return {
    client,
    close() {
      client.close();
      server.forceShutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
