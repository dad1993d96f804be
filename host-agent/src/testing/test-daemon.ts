// A real qvmd process for tests: temporary data and runtime directories, the built bundle
// (host-agent/dist/qvmd.js), an admin client, and stop/kill helpers. Used by the integration
// tests here and the end-to-end tests in tests/.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AdminClient, adminSocketPath } from "@qvm/protocol";
import { repoRoot } from "@qvm/images";

export interface TestDaemonDirs {
  base: string;
  dataDir: string;
  runtimeDir: string;
  imagesDir: string;
}

export interface TestDaemon {
  dirs: TestDaemonDirs;
  proc: ChildProcess;
  client: AdminClient;
  /** Everything qvmd wrote to stderr so far. */
  log(): string;
  /** SIGTERM (domains keep running) and wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
}

export function qvmdBundle(): string {
  return path.join(repoRoot(), "host-agent/dist/qvmd.js");
}

export function testDaemonDirs(label: string, imagesDir?: string): TestDaemonDirs {
  const base = mkdtempSync(path.join(os.tmpdir(), `qvm-${label}-`));
  return {
    base,
    dataDir: path.join(base, "data"),
    runtimeDir: path.join(base, "run"),
    imagesDir: imagesDir ?? path.join(base, "images"),
  };
}

export function removeTestDaemonDirs(dirs: TestDaemonDirs): void {
  if (!process.env.QVM_KEEP_TEST_DIRS) rmSync(dirs.base, { recursive: true, force: true });
}

export interface TestDaemonOptions {
  /**
   * A named network namespace (`ip netns add`) to run qvmd in; everything it spawns (VMMs, passt)
   * inherits it. Its /etc/netns/<netns>/resolv.conf, if any, is qvmd's /etc/resolv.conf.
   */
  netns?: string;
  /** Environment for qvmd beyond this process's own (QVM_SYSFS_ROOT: a fake host's PCI devices). */
  env?: NodeJS.ProcessEnv;
}

/**
 * `argv` run in network namespace `netns`. Not `ip netns exec`: that also mounts a new /sys for the
 * namespace, which hides /sys/fs/cgroup, where qvmd puts each VMM's cgroups. This switches only the
 * network namespace and, as `ip netns exec` does, binds the namespace's resolv.conf (passt reads
 * its DNS server there) in a mount namespace of qvmd's own. Each step execs the next, so the pid
 * is qvmd's.
 */
function inNetns(netns: string, argv: string[]): [string, ...string[]] {
  const bindResolvConf = 'if [ -e "$1" ]; then mount --bind "$1" /etc/resolv.conf || exit 1; fi; shift; exec "$@"';
  const resolvConf = `/etc/netns/${netns}/resolv.conf`;
  return ["nsenter", `--net=/run/netns/${netns}`, "unshare", "--mount", "--propagation", "slave", "sh", "-c", bindResolvConf, "qvmd-netns", resolvConf, ...argv];
}

/** Starts qvmd on `dirs` and resolves once its admin API answers. */
export async function startTestDaemon(dirs: TestDaemonDirs, timeoutMs = 15_000, extraArgs: string[] = [], opts: TestDaemonOptions = {}): Promise<TestDaemon> {
  const bundle = qvmdBundle();
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run \`npm run build\``);
  const qvmd = [process.execPath, bundle, "--foreground", "--data-dir", dirs.dataDir, "--runtime-dir", dirs.runtimeDir, "--images-dir", dirs.imagesDir, ...extraArgs];
  const [file, ...args] = opts.netns === undefined ? qvmd : inNetns(opts.netns, qvmd);
  const proc = spawn(file!, args, { stdio: ["ignore", "ignore", "pipe"], env: opts.env ? { ...process.env, ...opts.env } : undefined });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  const client = new AdminClient(adminSocketPath(dirs.runtimeDir));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`qvmd exited with ${proc.exitCode}: ${stderr}`);
    if (existsSync(adminSocketPath(dirs.runtimeDir))) {
      try {
        await client.getDaemonInfo({}, { timeoutMs: 1000 });
        break;
      } catch {
        // not serving yet
      }
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`qvmd did not answer within ${timeoutMs} ms: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dirs,
    proc,
    client,
    log: () => stderr,
    stop: async () => {
      client.close();
      if (proc.exitCode === null) proc.kill("SIGTERM");
      return exited;
    },
    kill: async () => {
      client.close();
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}
