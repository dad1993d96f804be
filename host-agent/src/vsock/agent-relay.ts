// grpc-js clients cannot be handed a pre-connected socket, so each domain gets a local Unix
// socket whose connections are relayed through the hybrid vsock handshake to a guest port.
import net from "node:net";
import { rmSync } from "node:fs";
import { dialHybridVsock } from "./hybrid-dial.js";

export class VsockRelay {
  private readonly server: net.Server;
  private readonly conns = new Set<net.Socket>();
  /** Host-side sockets whose bytes flow toward the guest; paused while the relay is held. */
  private readonly hostSides = new Set<net.Socket>();
  private held = false;
  private readonly waiting: Array<() => void> = [];

  private constructor(
    readonly listenPath: string,
    private readonly udsPath: string,
    private readonly port: number,
  ) {
    this.server = net.createServer((client) => this.relay(client));
  }

  static async listen(listenPath: string, udsPath: string, port: number): Promise<VsockRelay> {
    rmSync(listenPath, { force: true });
    const relay = new VsockRelay(listenPath, udsPath, port);
    await new Promise<void>((resolve, reject) => {
      relay.server.once("error", reject);
      relay.server.listen(listenPath, () => resolve());
    });
    return relay;
  }

  private relay(client: net.Socket): void {
    this.conns.add(client);
    client.pause();
    client.once("close", () => this.conns.delete(client));
    client.on("error", () => client.destroy());
    const connect = () =>
      dialHybridVsock(this.udsPath, this.port).then(
        (guest) => {
          if (client.destroyed) return guest.destroy();
          this.conns.add(guest);
          this.hostSides.add(client);
          guest.once("close", () => {
            this.conns.delete(guest);
            client.destroy();
          });
          guest.on("error", () => guest.destroy());
          client.once("close", () => {
            this.hostSides.delete(client);
            guest.destroy();
          });
          guest.pipe(client);
          // Host -> guest by hand instead of pipe(), so hold() can stop it without pipe()
          // resuming the source on the next drain.
          client.on("data", (d: Buffer) => {
            if (!guest.write(d)) client.pause();
          });
          guest.on("drain", () => {
            if (!this.held) client.resume();
          });
          client.once("end", () => guest.end());
          if (!this.held) client.resume();
        },
        () => client.destroy(),
      );
    if (this.held) this.waiting.push(() => void connect());
    else void connect();
  }

  /**
   * Stops sending host bytes to the guest (new connections wait). Used while the domain is
   * paused, so requests made meanwhile wait on the host side and time out cleanly instead of
   * piling up in the VMM's device queues.
   */
  hold(): void {
    this.held = true;
    for (const c of this.hostSides) c.pause();
  }

  release(): void {
    this.held = false;
    for (const c of this.hostSides) c.resume();
    for (const go of this.waiting.splice(0)) go();
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.listenPath, { force: true });
  }
}
