// The admin socket: a Unix socket (0660, group qvm) whose connections are checked against the
// kernel's peer credentials before grpc-js sees a single byte of them.
import { chmodSync, chownSync, rmSync } from "node:fs";
import net from "node:net";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { adminV1 } from "@qvm/protocol";
import type { Qvmd } from "../core/qvmd.js";
import { adminService } from "./service.js";
import { adminGroupId, peerAllowed, readPeerCred } from "./peer-cred.js";

export interface AdminServerOptions {
  socketPath: string;
  /** The qvm-peercred helper (built by `npm run build`). */
  peerCredHelper: string;
  log: (msg: string) => void;
  /** Members of this group may use the socket (default ADMIN_GROUP, "qvm"). */
  adminGroup?: string;
}

/** Admin messages are small; ListDomains of many domains and exec chunks stay well under this. */
const MAX_ADMIN_MESSAGE = 16 * 1024 * 1024;

export class AdminServer {
  private constructor(
    private readonly grpc: Server,
    private readonly listener: net.Server,
    private readonly sockets: Set<net.Socket>,
    readonly socketPath: string,
  ) {}

  static async listen(qvmd: Qvmd, opts: AdminServerOptions): Promise<AdminServer> {
    const grpc = new Server({ "grpc.max_receive_message_length": MAX_ADMIN_MESSAGE, "grpc.max_send_message_length": MAX_ADMIN_MESSAGE });
    grpc.addService(adminV1.QvmAdminService, adminService(qvmd));
    const injector = grpc.createConnectionInjector(ServerCredentials.createInsecure());
    const ownUid = process.getuid?.() ?? 0;
    const groupId = adminGroupId(undefined, opts.adminGroup);
    const sockets = new Set<net.Socket>();
    const listener = net.createServer({ pauseOnConnect: true }, (socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      socket.on("error", () => socket.destroy());
      readPeerCred(socket, opts.peerCredHelper).then(
        (peer) => {
          if (!peerAllowed(peer, ownUid, groupId)) {
            opts.log(`refused admin connection from pid ${peer.pid} uid ${peer.uid}: not root, not qvmd's user, not in group qvm`);
            socket.destroy();
            return;
          }
          injector.injectConnection(socket);
          socket.resume();
        },
        (err: Error) => {
          opts.log(`refused admin connection: ${err.message}`);
          socket.destroy();
        },
      );
    });
    rmSync(opts.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(opts.socketPath, () => resolve());
    });
    chmodSync(opts.socketPath, groupId === undefined ? 0o600 : 0o660);
    if (groupId !== undefined && ownUid === 0) chownSync(opts.socketPath, 0, groupId);
    return new AdminServer(grpc, listener, sockets, opts.socketPath);
  }

  /** Stops accepting, then ends every call at once (event streams never end by themselves). */
  close(): void {
    this.listener.close();
    this.grpc.forceShutdown();
    for (const s of this.sockets) s.destroy();
    rmSync(this.socketPath, { force: true });
  }
}
