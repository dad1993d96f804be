// Fast disposables on a VMM that restores snapshots (cloud-hypervisor, issue 17): the first
// disposable of a template boots as usual under its own name, but as a snapshot source: once its
// agent answers, qvmd closes its connections, pauses it, has the VMM write its state, and stops
// it. That disposable (and every later one) is then restored from the snapshot, and told its name.
//
//   DATA/dispvm-snapshots/TEMPLATE/KEY/   vm/           the VMM's snapshot (config, state, memory)
//                                         root.qcow2    the source's disks as the snapshot saw them
//                                         private.qcow2 (overlays of the template's volumes, frozen)
//                                         ready         written last: the snapshot is whole
//
// Each restored disposable gets fresh overlays on the frozen disks, in its own volatile directory,
// so the guest's page cache matches its disks and nothing is shared writable. A KEY (BootPlan.
// fromSnapshot) changes with the template's volumes, the kernel and the VM's shape; older keys of
// the template are removed when a new one is made. A crash mid-make leaves a KEY directory
// without `ready`, which the next make starts again.
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createOverlay } from "../storage/qemu-img.js";
import type { DiskSpec } from "../vmm/driver.js";
import type { BootPlan } from "./boot-plan.js";
import { DomainVm, type DomainVmOptions } from "./domain-vm.js";

export class DispvmSnapshots {
  /** Makes in progress, per snapshot directory: one make per key at a time. */
  private readonly making = new Map<string, Promise<void>>();

  constructor(
    /** DATA/dispvm-snapshots */
    readonly root: string,
    private readonly log: (msg: string) => void,
  ) {}

  dirOf(template: string, key: string): string {
    return path.join(this.root, template, key);
  }

  /**
   * Starts the plan's disposable from its template's snapshot, making the snapshot first (a cold
   * boot under this disposable's name) when there is none for the plan's key.
   */
  async start(plan: BootPlan & Required<Pick<BootPlan, "fromSnapshot">>, disks: DiskSpec[], base: DomainVmOptions): Promise<DomainVm> {
    const dir = this.dirOf(plan.fromSnapshot.template, plan.fromSnapshot.key);
    if (!existsSync(path.join(dir, "ready"))) {
      let made = this.making.get(dir);
      if (!made) {
        made = this.make(dir, disks, base).finally(() => this.making.delete(dir));
        this.making.set(dir, made);
      }
      await made;
    }
    return DomainVm.start({ ...base, disks: await this.overlaysOnSnapshot(dir, disks), restoreFrom: path.join(dir, "vm") });
  }

  /** The disposable's disks, remade as overlays on the snapshot's frozen disks (same paths). */
  private async overlaysOnSnapshot(dir: string, disks: DiskSpec[]): Promise<DiskSpec[]> {
    const out: DiskSpec[] = [];
    for (const d of disks) {
      const frozen = path.join(dir, `${d.serial}.qcow2`);
      if (!d.backingFiles?.length || !existsSync(frozen)) {
        out.push(d);
        continue;
      }
      rmSync(d.path, { force: true });
      await createOverlay(frozen, d.path, "qcow2");
      out.push({ ...d, backingFiles: [frozen, ...d.backingFiles] });
    }
    return out;
  }

  private async make(dir: string, disks: DiskSpec[], base: DomainVmOptions): Promise<void> {
    // Made in place (not renamed from elsewhere): the source's VMM is told now that it may read
    // this directory (readPaths: landlock), a rule every VM restored from it keeps, and the
    // restored VMs' overlays name the frozen disks here. Until `ready` exists it is not used, and
    // the next make starts it again.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(path.join(dir, "vm"), { recursive: true, mode: 0o700 });
    this.log(`${base.name}: making the snapshot disposables of ${path.basename(path.dirname(dir))} start from (one boot)`);
    // The source boots on copies of the disposable's fresh overlays (they name the template's
    // volumes as their backing files); after the snapshot they are the frozen disks.
    const sourceDisks = disks.map((d) => {
      if (!d.backingFiles?.length) return d;
      const copy = path.join(dir, `${d.serial}.qcow2`);
      copyFileSync(d.path, copy);
      return { ...d, path: copy };
    });
    try {
      const source = await DomainVm.start({ ...base, disks: sourceDisks, snapshotDir: path.join(dir, "vm"), readPaths: [dir] });
      try {
        await source.snapshot();
      } finally {
        await source.kill().catch(() => {});
      }
      for (const old of readdirSync(path.dirname(dir))) {
        if (old !== path.basename(dir)) rmSync(path.join(path.dirname(dir), old), { recursive: true, force: true });
      }
      // The source's VMM (the first disposable's uid) wrote the snapshot and the disks; every later
      // disposable's VMM (another uid) reads them, read-only, through its jail.
      handToRoot(dir);
      writeFileSync(path.join(dir, "ready"), `${new Date().toISOString()}\n`);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
}

/** Owned by qvmd's user, readable by all (directories 0755, files 0644); links are not followed. */
function handToRoot(dir: string): void {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return rmSync(p);
    chownSync(p, uid, gid);
    chmodSync(p, st.isDirectory() ? 0o755 : 0o644);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(path.join(p, e));
  };
  walk(dir);
}
