// Where a guest's connections to host port P arrive: the VMM's `<vsock socket>_<P>` (hybrid vsock,
// hybrid-dial.ts). The host must already listen there, and a jailed VMM connects as its own user.
import { chownSync, rmSync } from "node:fs";
import type net from "node:net";

/**
 * Makes `server` listen on `socketPath`, replacing a stale socket file; `owner` (the jailed VMM's
 * user) is given the socket so that it may connect.
 */
export async function listenForGuest(server: net.Server, socketPath: string, owner?: { uid: number; gid: number }): Promise<void> {
  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
  if (owner) chownSync(socketPath, owner.uid, owner.gid);
}
