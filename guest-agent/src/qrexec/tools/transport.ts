// The way out of a domain to the host's qrexec router: vsock CID 2, port 50. Node has no
// AF_VSOCK, so socat carries the connection (as it does for the agent's listening side).
import { spawn } from "node:child_process";
import { Duplex } from "node:stream";
import { QREXEC_VSOCK_PORT } from "@qvm/protocol/qrexec";

/** A host connection; QVM_QREXEC_SOCKET (a Unix socket) stands in for vsock where there is none. */
export function connectHost(): Duplex {
  const unix = process.env.QVM_QREXEC_SOCKET;
  const address = unix ? `UNIX-CONNECT:${unix}` : `VSOCK-CONNECT:2:${QREXEC_VSOCK_PORT}`;
  const child = spawn("socat", ["-", address], { stdio: ["pipe", "pipe", "inherit"] });
  const conn = Duplex.from({ readable: child.stdout, writable: child.stdin });
  child.on("error", (err) => conn.destroy(err));
  conn.on("close", () => child.kill());
  return conn;
}
