// grpc-js clients cannot be handed a pre-connected socket, so each domain gets a local Unix
// socket whose connections are relayed through the hybrid vsock handshake to a guest port.
import net from "node:net";
import { rmSync } from "node:fs";
import { dialHybridVsock } from "./hybrid-dial.js";

export class VsockRelay {
  private readonly server: net.Server;
  private readonly conns = new Set<net.Socket>();

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
    dialHybridVsock(this.udsPath, this.port).then(
      (guest) => {
        if (client.destroyed) return guest.destroy();
        this.conns.add(guest);
        guest.once("close", () => {
          this.conns.delete(guest);
          client.destroy();
        });
        guest.on("error", () => guest.destroy());
        client.once("close", () => guest.destroy());
        client.pipe(guest);
        guest.pipe(client);
        client.resume();
      },
      () => client.destroy(),
    );
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.listenPath, { force: true });
  }
}
