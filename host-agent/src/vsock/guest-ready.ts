// "The guest's vsock is up": the guest agent connects once to the host on AGENT_READY_VSOCK_PORT
// when it has started, and qvmd dials the agent only after that (or after a fallback delay).
//
// Why not just dial until the agent answers: vhost-device-vsock 0.3 accepts a host connection as
// soon as QEMU has sent it the guest's memory table, before the guest driver has made the
// virtqueues ready. The CONNECT that follows makes its vring worker walk a queue that is not ready;
// the worker thread ends with that error, silently, and every vsock stream of the domain is dead
// for the rest of its life (the guest boots to its login prompt and the agent never answers).
// Dialling in a tight loop during boot reproduces it on every boot; under load the window is wide
// enough that the 200 ms dial loop hit it about once in twenty boots. A connection made by the
// guest proves that its driver is up, so no dial can fall into that window.
//
// Nothing is read from the guest's connection: it is closed at once, and only the first counts.
import { rmSync } from "node:fs";
import net from "node:net";
import { listenForGuest } from "./guest-port-listener.js";

export class GuestReadySignal {
  private readonly arrived: Promise<void>;
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
  ) {
    this.arrived = new Promise<void>((resolve) => {
      server.on("connection", (s) => {
        s.destroy();
        resolve();
        this.close();
      });
    });
  }

  /** Listens on `socketPath` (the VMM's `<vsock socket>_<port>`); `owner` is the jailed VMM's user. */
  static async listen(socketPath: string, owner?: { uid: number; gid: number }): Promise<GuestReadySignal> {
    const server = net.createServer();
    server.on("error", () => {});
    await listenForGuest(server, socketPath, owner);
    return new GuestReadySignal(server, socketPath);
  }

  /**
   * Resolves true when the guest has connected, false when `timeoutMs` passed first or `isAlive`
   * turned false (the caller's own checks then say what happened).
   */
  async wait(timeoutMs: number, isAlive: () => boolean = () => true): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    let poll: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
      poll = setInterval(() => {
        if (!isAlive()) resolve(false);
      }, 200);
    });
    try {
      return await Promise.race([this.arrived.then(() => true), gaveUp]);
    } finally {
      clearTimeout(timer);
      clearInterval(poll);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    rmSync(this.socketPath, { force: true });
  }
}
