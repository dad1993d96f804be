// Running qvmd: its data and runtime directories checked (dirs.ts), one instance per runtime
// directory (a pid file guards it), the admin socket, templates registered, VMMs re-attached,
// autostart domains started; on SIGTERM or SIGINT it lets go of the VMMs (they keep running) and
// exits 0.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { QvmError, adminSocketPath } from "@qvm/protocol";
import { ImageStore } from "@qvm/images";
import { QemuDriver } from "../vmm/qemu/qemu-driver.js";
import { CloudHypervisorDriver } from "../vmm/cloud-hypervisor/ch-driver.js";
import { chooseAccel } from "../vmm/accel.js";
import { processAlive } from "../vmm/process.js";
import { AdminServer } from "../admin/server.js";
import { composeQvmd, type ComposeOptions } from "../core/compose.js";
import { DEFAULT_VMM_UID_RANGE } from "../domain/vmm-users.js";
import type { ResourceLimits } from "../domain/admission.js";
import { checkOwnDirectory } from "./dirs.js";
import type { Qvmd } from "../core/qvmd.js";

export interface DaemonOptions {
  dataDir: string;
  runtimeDir: string;
  imagesDir: string;
  peerCredHelper: string;
  /** Members of this group may use the admin socket (`--admin-group`; default qvm). */
  adminGroup?: string;
  /** The qvm-tap-open helper, for sys-net's `uplink tap:NAME` (built next to qvm-peercred). */
  tapOpenHelper?: string;
  /** The qvm-qmp-add-fd helper, for plugging a USB stick into a running domain (built next to qvm-peercred). */
  qmpAddFdHelper?: string;
  log: (msg: string) => void;
  qrexec?: ComposeOptions["qrexec"];
  /** Start domains under TCG, which gives no hardware isolation (`--allow-tcg`, QVM_ALLOW_TCG=1). */
  allowTcg?: boolean;
  /** What may run at once (`--max-running`, `--max-guest-memory`, `--disk-reserve`, disposables); unset: the defaults. */
  limits?: Partial<ResourceLimits>;
}

export interface RunningDaemon {
  qvmd: Qvmd;
  admin: AdminServer;
  stop(): Promise<void>;
}

const PID_FILE = "qvmd.pid";

/** Refuses to start when another live qvmd owns the runtime directory. */
function takePidFile(runtimeDir: string): () => void {
  const file = path.join(runtimeDir, PID_FILE);
  if (existsSync(file)) {
    const pid = Number(readFileSync(file, "utf8").trim());
    if (pid > 0 && pid !== process.pid && processAlive(pid, "qvmd")) {
      throw new QvmError("FAILED_PRECONDITION", `another qvmd (pid ${pid}) already serves ${runtimeDir}; stop it first`);
    }
  }
  writeFileSync(file, `${process.pid}\n`, { mode: 0o644 });
  return () => {
    try {
      if (readFileSync(file, "utf8").trim() === String(process.pid)) rmSync(file);
    } catch {
      // already gone
    }
  };
}

export async function startDaemon(opts: DaemonOptions): Promise<RunningDaemon> {
  // The runtime directory is traversable so members of group qvm can reach the admin socket;
  // the per-domain directories below it are private (0700).
  mkdirSync(opts.runtimeDir, { recursive: true, mode: 0o755 });
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  checkOwnDirectory(opts.runtimeDir, "runtime directory");
  checkOwnDirectory(opts.dataDir, "data directory");
  const releasePid = takePidFile(opts.runtimeDir);
  try {
    const qvmd = composeQvmd({
      dataDir: opts.dataDir,
      runtimeDir: opts.runtimeDir,
      images: new ImageStore(opts.imagesDir),
      // Every driver qvm has (VMM_KINDS); `vmm` picks one per domain, and a driver whose VMM this
      // host lacks fails that domain's start with the install step.
      drivers: [
        new QemuDriver({ log: opts.log, allowTcg: opts.allowTcg ?? false, tapOpenHelper: opts.tapOpenHelper, qmpAddFdHelper: opts.qmpAddFdHelper }),
        new CloudHypervisorDriver({ log: opts.log }),
      ],
      // Only root can give each VMM a uid of its own; a non-root qvmd runs them as itself.
      vmmUids: process.getuid?.() === 0 ? DEFAULT_VMM_UID_RANGE : undefined,
      accel: () => chooseAccel().accel,
      version: process.env.QVM_VERSION ?? "0.1.0",
      log: opts.log,
      qrexec: opts.qrexec,
      limits: opts.limits,
    });
    const l = qvmd.limits();
    opts.log(
      `limits: ${l.maxRunning} running domains, ${l.maxGuestMemoryMiB} MiB of guest memory, ${l.diskReserveMiB} MiB kept free on the data disk, ` +
        `${l.maxDispvms} disposables (${l.maxDispvmsPerSource} per caller), nested disposables ${l.nestedDispvms ? "allowed" : "refused"}`,
    );
    await qvmd.boot();
    const admin = await AdminServer.listen(qvmd, { socketPath: adminSocketPath(opts.runtimeDir), peerCredHelper: opts.peerCredHelper, adminGroup: opts.adminGroup, log: opts.log });
    opts.log(`qvmd ${process.pid} serving ${admin.socketPath} (data ${opts.dataDir})`);
    void qvmd.autostart();
    let stopping: Promise<void> | undefined;
    return {
      qvmd,
      admin,
      stop: () =>
        (stopping ??= (async () => {
          admin.close();
          await qvmd.close();
          releasePid();
        })()),
    };
  } catch (err) {
    releasePid();
    throw err;
  }
}
