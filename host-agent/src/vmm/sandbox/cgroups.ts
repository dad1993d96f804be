// Per-domain cgroup limits for a VMM: pids and memory (guest RAM + the VMM's overhead + a margin).
// Two hierarchies: v1 (a directory per controller, as these development machines mount it) and
// v2 (one unified tree, as systemd hosts mount it; qvmd's unit has Delegate=yes, and VMs go in
// siblings of qvmd's own leaf, since v2 keeps processes out of inner nodes). The cgroupfs root is
// injected so both are tested, v2 against a fake tree.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";

export interface CgroupLimits {
  memoryBytes: number;
  pids: number;
}

/** Where a domain's cgroups are and what its VMM processes join. */
export interface DomainCgroups {
  /** The cgroup directories made for the domain (removed at stop). */
  dirs: string[];
  /** The cgroup.procs files the jail writes its pid to. */
  procs: string[];
}

export interface CgroupHost {
  /** The cgroupfs mount point (/sys/fs/cgroup). */
  root: string;
  /** The text of /proc/self/cgroup: where qvmd itself is. */
  selfCgroup: string;
}

export const hostCgroups = (): CgroupHost => ({ root: "/sys/fs/cgroup", selfCgroup: readFileSync("/proc/self/cgroup", "utf8") });

/** The folder qvmd keeps its VMs' cgroups in, below its own cgroup. */
const VMS_DIR = "qvm-vms";

export function cgroupVersion(host: CgroupHost): 1 | 2 | undefined {
  if (existsSync(path.join(host.root, "cgroup.controllers"))) return 2;
  if (existsSync(path.join(host.root, "memory")) && existsSync(path.join(host.root, "pids"))) return 1;
  return undefined;
}

/** qvmd's own cgroup path for a v1 controller, or for v2 ("" controller list, hierarchy 0). */
function ownPath(host: CgroupHost, controller: string | undefined): string {
  for (const line of host.selfCgroup.split("\n")) {
    const [, ctrls, p] = line.split(":");
    if (p === undefined) continue;
    if (controller === undefined ? line.startsWith("0::") : ctrls!.split(",").includes(controller)) return p;
  }
  return "/";
}

/** Makes the domain's cgroups with their limits; returns where its VMM processes go. */
export function makeDomainCgroups(host: CgroupHost, domain: string, limits: CgroupLimits): DomainCgroups {
  const version = cgroupVersion(host);
  if (!version) throw new QvmError("MISSING_DEPENDENCY", `no memory and pids cgroup controllers under ${host.root}; mount cgroups (v1 or v2) for VMM limits`);
  if (version === 1) {
    const mem = path.join(host.root, "memory", ownPath(host, "memory"), VMS_DIR, domain);
    const pids = path.join(host.root, "pids", ownPath(host, "pids"), VMS_DIR, domain);
    for (const d of [mem, pids]) mkdirSync(d, { recursive: true });
    writeFileSync(path.join(mem, "memory.limit_in_bytes"), String(limits.memoryBytes));
    writeFileSync(path.join(pids, "pids.max"), String(limits.pids));
    return { dirs: [mem, pids], procs: [path.join(mem, "cgroup.procs"), path.join(pids, "cgroup.procs")] };
  }
  // v2: qvmd's cgroup becomes an inner node: qvmd moves to a leaf of its own, VMs to siblings.
  const own = path.join(host.root, ownPath(host, undefined));
  const vms = path.join(own, VMS_DIR);
  const leaf = path.join(own, "qvmd");
  if (!existsSync(vms)) {
    mkdirSync(leaf, { recursive: true });
    writeFileSync(path.join(leaf, "cgroup.procs"), String(process.pid));
    writeFileSync(path.join(own, "cgroup.subtree_control"), "+memory +pids");
    mkdirSync(vms, { recursive: true });
    writeFileSync(path.join(vms, "cgroup.subtree_control"), "+memory +pids");
  }
  const dir = path.join(vms, domain);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "memory.max"), String(limits.memoryBytes));
  writeFileSync(path.join(dir, "memory.swap.max"), "0");
  writeFileSync(path.join(dir, "pids.max"), String(limits.pids));
  return { dirs: [dir], procs: [path.join(dir, "cgroup.procs")] };
}

/** Removes the domain's cgroups once its processes are gone; a cgroup still busy is left. */
export function removeDomainCgroups(dirs: readonly string[]): void {
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch {
      // already gone, or a process is still in it (it is removed at the next start's cleanup)
    }
  }
}
