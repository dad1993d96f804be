// What applying the network needs from the domain besides commands: its links (by MAC), files it
// writes (resolv.conf, a sysctl), name resolution, and a record of what was applied last. One
// interface so tests can give a fake domain; systemNetHost() is the real one.
import { lookup } from "node:dns/promises";
import { mkdir, readFile, readdir, rename, writeFile } from "node:fs/promises";
import path from "node:path";

export interface LinkInfo {
  name: string;
  /** Lowercase, as sysfs writes it. */
  mac: string;
}

/** What the last successful apply left, to tell which clients' rules changed since. */
export interface AppliedState {
  /** client ip → what its traffic was checked against (slot, MAC, chain). */
  clients: Record<string, string>;
}

export interface NetHost {
  listLinks(): Promise<LinkInfo[]>;
  /** Replaces /etc/resolv.conf atomically. */
  writeResolvConf(text: string): Promise<void>;
  /** Sets a sysctl such as "net.ipv4.ip_forward". */
  setSysctl(key: string, value: string): Promise<void>;
  /** The host name's IPv4 addresses (resolve.ts bounds the time it may take). */
  resolve(hostName: string): Promise<string[]>;
  readState(): Promise<AppliedState | undefined>;
  writeState(state: AppliedState): Promise<void>;
}

/** Writes through a temporary file in the same directory and renames it over the target. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.qvm-${process.pid}`);
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, file);
}

export interface SystemPaths {
  sysClassNet: string;
  resolvConf: string;
  procSys: string;
  /** On tmpfs: forgotten at reboot, when conntrack is empty anyway. */
  stateFile: string;
}

const DEFAULT_PATHS: SystemPaths = {
  sysClassNet: "/sys/class/net",
  resolvConf: "/etc/resolv.conf",
  procSys: "/proc/sys",
  stateFile: "/run/qvm-agent/net-applied.json",
};

export function systemNetHost(paths: Partial<SystemPaths> = {}): NetHost {
  const p = { ...DEFAULT_PATHS, ...paths };
  return {
    async listLinks() {
      const links: LinkInfo[] = [];
      for (const name of await readdir(p.sysClassNet)) {
        if (name === "lo") continue;
        try {
          const mac = (await readFile(path.join(p.sysClassNet, name, "address"), "utf8")).trim().toLowerCase();
          links.push({ name, mac });
        } catch {
          // A link that vanished between readdir and read, or has no address: not ours to manage.
        }
      }
      return links;
    },
    writeResolvConf: (text) => writeAtomically(p.resolvConf, text),
    setSysctl: (key, value) => writeFile(path.join(p.procSys, ...key.split(".")), `${value}\n`),
    async resolve(hostName) {
      const found = await lookup(hostName, { all: true, family: 4 });
      return found.map((a) => a.address);
    },
    async readState() {
      try {
        const parsed = JSON.parse(await readFile(p.stateFile, "utf8")) as unknown;
        const clients = (parsed as { clients?: unknown } | null)?.clients;
        if (typeof clients !== "object" || clients === null) return undefined;
        return { clients: Object.fromEntries(Object.entries(clients).filter((e): e is [string, string] => typeof e[1] === "string")) };
      } catch {
        return undefined;
      }
    },
    async writeState(state) {
      await mkdir(path.dirname(p.stateFile), { recursive: true, mode: 0o700 });
      await writeAtomically(p.stateFile, `${JSON.stringify(state)}\n`);
    },
  };
}
