// The files that make network links. Every link is a pair of Unix datagram sockets, one bound
// by each VMM (QEMU's `-netdev dgram`), each sending to a path in its own runtime directory:
// eth0.peer in a client, vifN.peer in its netvm. qvmd makes those paths hard links to the peer's
// socket, so a frame goes straight from one VMM to the other: no host network stack, no daemon
// in the path, and qvmd can make, move or cut a link at any time without the VMMs' help.
//
// The files are the state: which client holds which slot is read back from the inodes (a
// slot's peer link is the same inode as its client's socket), so a qvmd restart, or a crash
// between two steps, loses nothing.
import { chmodSync, existsSync, linkSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { CLIENT_NIC, NET_SLOTS, slotNic } from "./addresses.js";

export interface LinkEnds {
  /** The socket the VMM binds. */
  local: string;
  /** Where the VMM sends: a hard link qvmd places to the peer's socket. */
  remote: string;
}

export const netDirOf = (runtimeDir: string) => path.join(runtimeDir, "net");

export function nicEnds(runtimeDir: string, nic: string): LinkEnds {
  const dir = netDirOf(runtimeDir);
  return { local: path.join(dir, `${nic}.sock`), remote: path.join(dir, `${nic}.peer`) };
}

function inode(file: string): number | undefined {
  try {
    return statSync(file).ino;
  } catch {
    return undefined;
  }
}

/** Places `target` at `at` atomically (a hard link under a temporary name, then renamed). */
function linkAt(target: string, at: string): void {
  const tmp = `${at}.tmp`;
  rmSync(tmp, { force: true });
  linkSync(target, tmp);
  renameSync(tmp, at);
}

export class LinkFiles {
  /** Makes the net directory a VMM binds its sockets in (before the VMM starts). */
  prepare(runtimeDir: string): void {
    mkdirSync(netDirOf(runtimeDir), { recursive: true, mode: 0o700 });
  }

  /**
   * Lets the peer's VMM (another uid) send to this domain's sockets: only reachable through the
   * hard links qvmd places in the peer's own runtime directory, which no one else can enter.
   */
  openSockets(runtimeDir: string): void {
    const dir = netDirOf(runtimeDir);
    if (!existsSync(dir)) return;
    for (const f of readdirSync(dir)) if (f.endsWith(".sock") && !f.startsWith("passt")) chmodSync(path.join(dir, f), 0o666);
  }

  /** The slot a client holds in a netvm, read from the files. */
  slotOf(clientDir: string, netvmDir: string): number | undefined {
    const ino = inode(nicEnds(clientDir, CLIENT_NIC).local);
    if (ino === undefined) return undefined;
    for (let s = 0; s < NET_SLOTS; s++) if (inode(nicEnds(netvmDir, slotNic(s)).remote) === ino) return s;
    return undefined;
  }

  /** Slots whose peer is some client's socket, by slot: the inode they point to. */
  usedSlots(netvmDir: string): Map<number, number> {
    const used = new Map<number, number>();
    for (let s = 0; s < NET_SLOTS; s++) {
      const ino = inode(nicEnds(netvmDir, slotNic(s)).remote);
      if (ino !== undefined) used.set(s, ino);
    }
    return used;
  }

  /**
   * Joins a client to a netvm on the lowest free slot (or the one it holds) and returns it.
   * Both sockets must exist (both VMMs run).
   */
  connect(clientDir: string, netvmDir: string, netvmName: string): number {
    const client = nicEnds(clientDir, CLIENT_NIC);
    if (inode(client.local) === undefined) throw new QvmError("FAILED_PRECONDITION", `the link socket ${client.local} is missing: the domain's VMM is not running`);
    let slot = this.slotOf(clientDir, netvmDir);
    if (slot === undefined) {
      const used = this.usedSlots(netvmDir);
      for (let s = 0; s < NET_SLOTS && slot === undefined; s++) if (!used.has(s)) slot = s;
    }
    if (slot === undefined) {
      throw new QvmError("RESOURCE_EXHAUSTED", `${netvmName} has no free link: all ${NET_SLOTS} serve running domains; give some of them another netvm (\`qvm prefs DOMAIN netvm sys-firewall2\`)`);
    }
    const side = nicEnds(netvmDir, slotNic(slot));
    if (inode(side.local) === undefined) throw new QvmError("FAILED_PRECONDITION", `the link socket ${side.local} is missing: ${netvmName}'s VMM is not running`);
    linkAt(client.local, side.remote);
    linkAt(side.local, client.remote);
    return slot;
  }

  /** Cuts a client's link: its own side, and the slot in `netvmDir` that points at it. */
  disconnect(clientDir: string, netvmDir: string | undefined): void {
    if (netvmDir) {
      const slot = this.slotOf(clientDir, netvmDir);
      if (slot !== undefined) rmSync(nicEnds(netvmDir, slotNic(slot)).remote, { force: true });
    }
    rmSync(nicEnds(clientDir, CLIENT_NIC).remote, { force: true });
  }

  /** Frees slots whose client is gone (its socket inode belongs to no live client). */
  pruneSlots(netvmDir: string, liveInodes: ReadonlySet<number>): number[] {
    const pruned: number[] = [];
    for (const [slot, ino] of this.usedSlots(netvmDir)) {
      if (liveInodes.has(ino)) continue;
      rmSync(nicEnds(netvmDir, slotNic(slot)).remote, { force: true });
      pruned.push(slot);
    }
    return pruned;
  }

  clientSocketInode(clientDir: string): number | undefined {
    return inode(nicEnds(clientDir, CLIENT_NIC).local);
  }
}
