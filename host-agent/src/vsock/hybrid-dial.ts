// Hybrid vsock, host side: the protocol that vhost-device-vsock, cloud-hypervisor and Firecracker
// speak on their Unix socket. Connect, write "CONNECT <port>\n", read "OK <host-port>\n"; after
// that the socket is the guest's vsock stream. The reply comes from the VMM's device model (not the
// guest), but it is still bounded: a reply longer than MAX_HANDSHAKE_BYTES or not of the form
// above fails the dial.
import net from "node:net";
import { QvmError } from "@qvm/protocol";

export const MAX_HANDSHAKE_BYTES = 64;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * How long a dial that timed out keeps its socket open for a late reply. vhost-device-vsock 0.3
 * panics its vring worker (and every vsock stream of the VM dies with it) when the guest accepts
 * a connection whose host end was already closed: it writes "OK" with `write_all(..).unwrap()`.
 * So a caller that gives up still leaves the socket open until the device answers or closes it.
 */
export const ABANDONED_DIAL_LINGER_MS = 5 * 60_000;

const OK_REPLY = /^OK \d{1,10}$/;

export function dialHybridVsock(udsPath: string, port: number, timeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS): Promise<net.Socket> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    return Promise.reject(new QvmError("INVALID_ARGUMENT", `invalid vsock port ${port}`));
  }
  return new Promise((resolve, reject) => {
    const sock = net.connect(udsPath);
    let buffered = Buffer.alloc(0);
    let done = false;
    /** Set when the dial gives up while the device may still answer. */
    let lingering = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off("data", onData);
      // Back to paused mode so nothing is lost before the caller attaches its own reader.
      sock.pause();
      if (err) {
        if (lingering) linger(sock);
        else sock.destroy();
        reject(err);
      } else {
        resolve(sock);
      }
    };
    const timer = setTimeout(() => {
      lingering = true;
      finish(new QvmError("AGENT_TIMEOUT", `no answer to CONNECT ${port} on ${udsPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) {
        if (buffered.length > MAX_HANDSHAKE_BYTES) finish(new QvmError("AGENT_PROTOCOL", `oversized vsock handshake reply on ${udsPath}`));
        return;
      }
      const line = buffered.subarray(0, nl).toString("latin1");
      if (nl > MAX_HANDSHAKE_BYTES || !OK_REPLY.test(line)) {
        finish(new QvmError("AGENT_PROTOCOL", `unexpected vsock handshake reply on ${udsPath}: ${JSON.stringify(line.slice(0, 32))}`));
        return;
      }
      const rest = buffered.subarray(nl + 1);
      finish();
      // Bytes that arrived with the OK line belong to the stream.
      if (rest.length) sock.unshift(rest);
    };
    sock.on("data", onData);
    sock.once("connect", () => sock.write(`CONNECT ${port}\n`));
    sock.once("error", (err: NodeJS.ErrnoException) =>
      finish(
        new QvmError(
          "AGENT_UNAVAILABLE",
          err.code === "ENOENT" || err.code === "ECONNREFUSED"
            ? `vsock socket ${udsPath} is not accepting connections (is the domain running?)`
            : `vsock connection to ${udsPath} failed: ${err.message}`,
          { cause: err },
        ),
      ),
    );
    // The device closes the connection when nothing listens on the guest port.
    sock.once("close", () => finish(new QvmError("AGENT_UNAVAILABLE", `nothing listens on guest vsock port ${port} (${udsPath})`)));
  });
}

/** Keeps an abandoned dial's socket until the device answers (then ends it) or closes it. */
function linger(sock: net.Socket): void {
  const cap = setTimeout(() => sock.destroy(), ABANDONED_DIAL_LINGER_MS);
  cap.unref();
  sock.once("close", () => clearTimeout(cap));
  sock.on("error", () => {});
  sock.once("data", () => sock.end());
  sock.resume();
}

/**
 * Polls until something in the guest accepts connections on `port`, or the deadline passes.
 * Used while a domain boots so that the gRPC channel is opened only once the agent listens
 * (grpc-js otherwise spends the boot in connect/backoff cycles). Returns the probe connection,
 * which the caller closes once its real connection is up.
 */
export async function waitForGuestPort(udsPath: string, port: number, timeoutMs: number, isAlive: () => boolean = () => true): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new QvmError("VMM_FAILED", "the VM exited before its agent listened");
    try {
      // One attempt at a time, each allowed the whole remaining time: a refused attempt ends at
      // once (nothing listens yet), and a slow one must not be abandoned (see linger).
      return await dialHybridVsock(udsPath, port, Math.max(1, deadline - Date.now()));
    } catch (err) {
      if (err instanceof QvmError && err.code === "AGENT_PROTOCOL") throw err;
      last = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new QvmError("AGENT_TIMEOUT", `nothing listened on guest vsock port ${port} within ${timeoutMs} ms`, { cause: last });
}
