// Who is on the other end of an admin connection, from the kernel (SO_PEERCRED), and whether
// they may use the admin API: root, qvmd's own user, or a member of the `qvm` group.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import type net from "node:net";
import { QvmError, ADMIN_GROUP } from "@qvm/protocol";

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
  /** Supplementary groups of the peer process (from /proc). */
  groups: number[];
}

/** Reads the peer's credentials by handing the socket to the qvm-peercred helper as fd 3. */
export function readPeerCred(socket: net.Socket, helper: string, timeoutMs = 2000): Promise<PeerCred> {
  if (!existsSync(helper)) {
    return Promise.reject(new QvmError("MISSING_DEPENDENCY", `${helper} is missing: run \`npm run build\` (it needs gcc)`));
  }
  return new Promise((resolve, reject) => {
    const child = spawn(helper, [], { stdio: ["ignore", "pipe", "pipe", socket] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      const m = /^(-?\d+) (\d+) (\d+)\n$/.exec(out);
      if (code !== 0 || !m) return reject(new QvmError("PERMISSION_DENIED", `cannot read peer credentials: ${err.trim() || `exit ${code}`}`));
      const pid = Number(m[1]);
      resolve({ pid, uid: Number(m[2]), gid: Number(m[3]), groups: supplementaryGroups(pid) });
    });
  });
}

function supplementaryGroups(pid: number): number[] {
  try {
    const line = /^Groups:(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "";
    return line.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The gid of the admin group (`qvmd --admin-group`, default qvm), if it exists on this host. */
export function adminGroupId(groupFile = "/etc/group", group: string = ADMIN_GROUP): number | undefined {
  try {
    for (const line of readFileSync(groupFile, "utf8").split("\n")) {
      const [name, , gid] = line.split(":");
      if (name === group && gid) return Number(gid);
    }
  } catch {
    // no group database: only root and qvmd's user get in
  }
  return undefined;
}

export function peerAllowed(peer: PeerCred, ownUid: number, groupId: number | undefined): boolean {
  if (peer.uid === 0 || peer.uid === ownUid) return true;
  return groupId !== undefined && (peer.gid === groupId || peer.groups.includes(groupId));
}
