// What is attached to one running domain, in two stores by who keeps it alive:
// - "vmm": held by the VMM process (a disk, later a tap device or a passed-through USB device).
//   It lives as long as the VM, survives a qvmd restart with it, and is released when the VM
//   exits, by whichever qvmd then watches it.
// - "qvmd": held by this qvmd process (the agent relay and client, the qrexec listener; later
//   window streams, USB and proxy connections). Released when the VM exits and when qvmd lets go
//   of the domain at exit; rebuilt at re-attach.
// Attachers are the plug-in point: each later capability registers one in the composition root.
import { DisposableStore, type Disposable } from "../base/disposables.js";
import type { VmInfo } from "../vmm/driver.js";

export type AttachmentHolder = "vmm" | "qvmd";

/** What an attacher gets to work with: the running domain, as far as attaching needs it. */
export interface AttachContext {
  name: string;
  info: VmInfo;
  /** True when qvmd takes back a VM that kept running (a restart), false at a fresh start. */
  reattached: boolean;
}

/** Makes one kind of attachment for each running domain. */
export interface Attacher {
  /** Shown in leak checks and logs ("qrexec listener"). */
  readonly name: string;
  readonly holder: AttachmentHolder;
  /**
   * Attaches to a domain that has just started or been re-attached. A "vmm" attacher called with
   * `reattached` recovers the handle of what the VMM still holds instead of making it again.
   */
  attach(ctx: AttachContext): Promise<Disposable>;
}

export class DomainAttachments {
  readonly vmm: DisposableStore;
  readonly qvmd: DisposableStore;

  constructor(
    readonly domain: string,
    log: (msg: string) => void,
  ) {
    const onError = (what: string, err: Error) => log(`${domain}: cannot release ${what}: ${err.message}`);
    this.vmm = new DisposableStore(onError);
    this.qvmd = new DisposableStore(onError);
  }

  add(holder: AttachmentHolder, what: string, d: Disposable): void {
    (holder === "vmm" ? this.vmm : this.qvmd).add(what, d);
  }

  /** Names of everything still held, "holder:name" (a leak check expects none after a stop). */
  held(): string[] {
    return [...this.vmm.held.map((n) => `vmm:${n}`), ...this.qvmd.held.map((n) => `qvmd:${n}`)];
  }

  /** The VM is gone: release everything. */
  async releaseAll(): Promise<void> {
    await this.qvmd.dispose();
    await this.vmm.dispose();
  }

  /** qvmd lets go while the VM keeps running: only what qvmd itself holds. */
  async releaseQvmdHeld(): Promise<void> {
    await this.qvmd.dispose();
  }

  /** Runs every attacher, registering each result; an attacher that fails is logged and skipped. */
  async attachAll(attachers: readonly Attacher[], ctx: AttachContext, log: (msg: string) => void): Promise<void> {
    for (const a of attachers) {
      try {
        this.add(a.holder, a.name, await a.attach(ctx));
      } catch (err) {
        log(`${ctx.name}: cannot attach ${a.name}: ${(err as Error).message}`);
      }
    }
  }
}
