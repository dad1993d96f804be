// Tells the host that this domain's vsock works: one connection to the host (CID 2) on
// AGENT_READY_VSOCK_PORT once the agent serves. qvmd dials the agent only after it
// (host-agent/src/vsock/guest-ready.ts says why). Node cannot open AF_VSOCK, so socat connects and
// sends nothing. It is tried a few times: the first attempt can race the bridge's own start-up.
// Failing is harmless (a qvmd that re-attached, or restored a snapshot, is not listening).
import { spawn } from "node:child_process";

const HOST_CID = 2;
const ATTEMPTS = 3;
const RETRY_MS = 1000;

export function announceReady(port: number, log: (m: string) => void): void {
  const attempt = (left: number) => {
    const child = spawn("socat", ["-u", "OPEN:/dev/null", `VSOCK-CONNECT:${HOST_CID}:${port}`], { stdio: "ignore" });
    child.on("error", (err) => log(`could not announce readiness: ${err.message}`));
    child.on("exit", (code) => {
      if (code === 0) return;
      if (left > 1) setTimeout(() => attempt(left - 1), RETRY_MS).unref();
      else log(`the host did not take the ready signal on vsock port ${port} (socat exited ${code})`);
    });
  };
  attempt(ATTEMPTS);
}
