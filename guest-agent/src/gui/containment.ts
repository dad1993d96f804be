// Keeps every process of a window together so that closing the window ends them all, including
// what the program forked, daemonized or moved to a new session.
//
// In a domain: a cgroup (v2) per window under the agent's own (qvm-agent.service has
// Delegate=yes), each process entering it before it runs (a root shell writes its own pid to
// cgroup.procs, then execs), and `cgroup.kill` ends the whole tree at once. Without a writable
// cgroup v2 (a host running the tests, an initramfs without systemd): a process group per
// process, killed as a group; a program that leaves its process group escapes that fallback.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface Containment {
  /** Where the processes are kept, for logs. */
  readonly describe: string;
  /** Whether each process is started in a process group of its own. */
  readonly detached: boolean;
  /** The command line that starts argv inside. */
  wrap(argv: string[]): string[];
  /**
   * SIGKILLs every process inside. `groups`: the process groups of the direct children still
   * running (only the process-group fallback uses them; a group whose leader was reaped is not
   * killed, as its number may belong to another process by then).
   */
  killAll(groups: number[]): void;
  /** True once no process is left inside (always true for process groups: their leaders' exits are awaited instead). */
  empty(): boolean;
  /** Removes what the containment made (an empty cgroup). */
  release(): void;
}

/** The process-group fallback: every direct child leads its own group (spawned detached). */
export function processGroups(): Containment {
  return {
    describe: "process groups",
    detached: true,
    wrap: (argv) => argv,
    killAll(groups) {
      for (const g of groups) {
        try {
          process.kill(-g, "SIGKILL");
        } catch {
          // The group is gone already.
        }
      }
    },
    empty: () => true,
    release() {},
  };
}

/** A window's cgroup: `dir` must be a new, empty cgroup v2 directory. */
export function cgroup(dir: string): Containment {
  const procs = path.join(dir, "cgroup.procs");
  const list = () => {
    try {
      return readFileSync(procs, "utf8").split("\n").filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  return {
    describe: `cgroup ${dir}`,
    detached: false,
    // $0 is cgroup.procs: the shell moves itself there before anything else runs, then becomes argv.
    wrap: (argv) => ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, ...argv],
    killAll() {
      try {
        writeFileSync(path.join(dir, "cgroup.kill"), "1");
      } catch {
        // Before Linux 5.14: kill what is listed (a forking process can race this; the caller
        // repeats it until the cgroup is empty).
        for (const pid of list()) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
      }
    },
    empty() {
      try {
        return /^populated 0$/m.test(readFileSync(path.join(dir, "cgroup.events"), "utf8"));
      } catch {
        return true;
      }
    },
    release() {
      try {
        rmdirSync(dir);
      } catch {
        // Still populated (logged by the caller) or gone.
      }
    },
  };
}

const WINDOW_CGROUP = /^qvm-window-\d+$/;

/**
 * Where windows' cgroups go: the agent's own cgroup v2 directory, when cgroup v2 is mounted at
 * `root` and the agent can make directories there; undefined otherwise.
 */
export function windowCgroupParent(root = "/sys/fs/cgroup", selfCgroup = "/proc/self/cgroup"): string | undefined {
  if (!existsSync(path.join(root, "cgroup.controllers"))) return undefined;
  let rel: string | undefined;
  try {
    rel = readFileSync(selfCgroup, "utf8")
      .split("\n")
      .find((l) => l.startsWith("0::"))
      ?.slice(3);
  } catch {
    return undefined;
  }
  if (rel === undefined || !rel.startsWith("/") || rel.split("/").includes("..")) return undefined;
  const parent = path.join(root, rel);
  const probe = path.join(parent, `qvm-window-probe-${process.pid}`);
  try {
    mkdirSync(probe);
    rmdirSync(probe);
    return parent;
  } catch {
    return undefined;
  }
}

/** Makes the cgroup for one window under `parent`. */
export function windowCgroup(parent: string, windowId: number): Containment {
  const dir = path.join(parent, `qvm-window-${windowId}`);
  mkdirSync(dir);
  return cgroup(dir);
}

/** Ends and removes windows' cgroups an earlier agent left (it was killed or restarted). */
export async function sweepWindowCgroups(parent: string, waitMs = 5000): Promise<string[]> {
  const swept: string[] = [];
  for (const name of readdirSync(parent)) {
    if (!WINDOW_CGROUP.test(name)) continue;
    const c = cgroup(path.join(parent, name));
    for (const deadline = Date.now() + waitMs; !c.empty() && Date.now() < deadline; ) {
      c.killAll([]);
      await new Promise((r) => setTimeout(r, 20));
    }
    c.release();
    swept.push(name);
  }
  return swept;
}
