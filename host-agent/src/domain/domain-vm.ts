// A running domain as the host sees it: its VMM (through a driver) and what is attached to it,
// the relay to its guest agent and the agent client first. Starting waits for the agent to
// answer Ping; a domain whose agent stays silent is stopped and the error names its serial
// console log. The runtime record left beside the VMM names its driver for a later re-attach.
import { closeSync, fstatSync, mkdirSync, openSync, readSync, rmSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import type { KernelBundle } from "@qvm/images";
import { AgentClient } from "../agent/agent-client.js";
import { ExecDataListener } from "../agent/data-channel.js";
import { AGENT_READY_VSOCK_PORT, EXEC_DATA_VSOCK_PORT } from "@qvm/protocol/contracts";
import { quoteGuestText } from "../agent/replies.js";
import { AGENT_VSOCK_PORT, DEFAULT_AGENT_READY_TIMEOUT_MS } from "../agent/limits.js";
import { VsockRelay } from "../vsock/agent-relay.js";
import { waitForGuestPort } from "../vsock/hybrid-dial.js";
import { GuestReadySignal } from "../vsock/guest-ready.js";
import type { DeviceSpec, DiskSpec, NicSpec, VmCapabilities, VmExit, VmHandle, VmInfo, VmmDriver, VmmUser, VmSpec } from "../vmm/driver.js";
import { readRuntimeRecord, writeRuntimeRecord, type DriverTable } from "../vmm/drivers.js";
import { createOverlay } from "../storage/qemu-img.js";
import { toDisposable } from "../base/disposables.js";
import { DomainAttachments } from "./attachments.js";

export interface DomainVmOptions {
  name: string;
  driver: VmmDriver;
  kernel: KernelBundle;
  /**
   * The domain's volumes, root first (serials "root", "private"), as the storage layer prepared
   * them; or, without volumes, `rootImage`: a root image booted through a throwaway overlay.
   */
  disks?: DiskSpec[];
  rootImage?: string;
  runtimeDir: string;
  logDir: string;
  memoryMiB?: number;
  vcpus?: number;
  kernelArgs?: string[];
  agentTimeoutMs?: number;
  /** The unprivileged identity the VMM runs as (see VmSpec.user). */
  user?: VmmUser;
  /** Network links (the network layer's plan). */
  nics?: NicSpec[];
  /** Devices present from boot: passed through (`qvm pci`), emulated USB ones (`qvm usb plug`). */
  devices?: DeviceSpec[];
  /**
   * Runs once the runtime directory exists, right before the VMM starts (a link's user-mode
   * stack the VMM connects to); the returned function undoes it if the VMM does not start.
   */
  beforeVmm?: () => Promise<() => void>;
  /** Told about attachments that cannot be released. */
  log?: (msg: string) => void;
  /** Where snapshot() writes the VM's state (a driver with snapshots: cloud-hypervisor). */
  snapshotDir?: string;
  /** Host paths the VMM may also read (VmSpec.readPaths). */
  readPaths?: string[];
  /**
   * Start from this snapshot directory instead of booting (the driver's restore), then tell the
   * agent its name (Reidentify): the snapshot was of another domain. `disks` must hold what the
   * snapshot's disks held.
   */
  restoreFrom?: string;
}

export const DEFAULT_MEMORY_MIB = 1024;
export const DEFAULT_VCPUS = 2;
/** Every domain has its own vsock device, so every guest can use the first free context id. */
const GUEST_CID = 3;
/** How long a VMM may take to open its control channel after it was spawned. */
const VMM_READY_TIMEOUT_MS = 30_000;
/** The ACPI power button's grace when the agent cannot be asked to power off. */
const POWER_BUTTON_TIMEOUT_MS = 10_000;
/**
 * The share of the agent timeout spent waiting for the agent's ready signal before dialing it
 * anyway (a template built before the signal existed never sends it).
 */
const READY_SIGNAL_SHARE = 0.5;

export class DomainVm {
  /** Everything attached to this domain; the relay and agent client are the first. */
  readonly attachments: DomainAttachments;

  private constructor(
    readonly name: string,
    readonly vm: VmHandle,
    readonly agent: AgentClient,
    private readonly relay: VsockRelay,
    readonly consoleLog: string,
    private readonly log: (msg: string) => void,
    dataChannels?: ExecDataListener,
  ) {
    this.attachments = new DomainAttachments(name, log);
    this.attachments.add("qvmd", "vsock relay", toDisposable(() => relay.close()));
    this.attachments.add("qvmd", "agent client", toDisposable(() => agent.close()));
    if (dataChannels) {
      agent.useDataChannels(dataChannels);
      this.attachments.add("qvmd", "exec data channels", toDisposable(() => dataChannels.close()));
    }
    void vm.exited.then(() => this.attachments.releaseAll());
  }

  get exited(): Promise<VmExit> {
    return this.vm.exited;
  }

  /** The VMM's optional capabilities (emulated USB devices while it runs). */
  get capabilities(): VmCapabilities {
    return this.vm.capabilities;
  }

  info(): Promise<VmInfo> {
    return this.vm.info();
  }

  resizeDisk(index: number, sizeBytes: number): Promise<void> {
    return this.vm.resizeDisk(index, sizeBytes);
  }

  /** Boots the domain and returns once its agent answers. */
  static async start(opts: DomainVmOptions): Promise<DomainVm> {
    const overlay = path.join(opts.runtimeDir, "root.qcow2");
    const spec: VmSpec = {
      name: opts.name,
      runtimeDir: opts.runtimeDir,
      logDir: opts.logDir,
      kernel: { image: opts.kernel.image, initrd: opts.kernel.initrd },
      // The guest's hostname is the domain's name, as in Qubes (names are validated: safe here).
      kernelArgs: [`systemd.hostname=${opts.name}`, ...(opts.kernelArgs ?? [])],
      disks: [
        ...(opts.disks ?? [{ serial: "root", path: overlay, format: "qcow2", readonly: false }]),
        { serial: "modules", path: opts.kernel.modules, format: "raw", readonly: true },
      ],
      memoryMiB: opts.memoryMiB ?? DEFAULT_MEMORY_MIB,
      vcpus: opts.vcpus ?? DEFAULT_VCPUS,
      guestCid: GUEST_CID,
      user: opts.user,
      nics: opts.nics ?? [],
      devices: opts.devices ?? [],
      ...(opts.snapshotDir ? { snapshotDir: opts.snapshotDir } : {}),
      ...(opts.readPaths?.length ? { readPaths: opts.readPaths } : {}),
    };
    if (opts.restoreFrom && !opts.driver.restore) throw new QvmError("FAILED_PRECONDITION", `the ${opts.driver.kind} driver cannot restore snapshots`);
    if (await opts.driver.attach(opts.runtimeDir, opts.logDir)) {
      throw new QvmError("FAILED_PRECONDITION", `${opts.name} is already running`);
    }
    mkdirSync(opts.runtimeDir, { recursive: true, mode: 0o700 });
    let vm: VmHandle;
    let undoBeforeVmm: (() => void) | undefined;
    try {
      if (opts.beforeVmm) undoBeforeVmm = await opts.beforeVmm();
      if (!opts.disks) {
        if (!opts.rootImage) throw new QvmError("INVALID_ARGUMENT", `${opts.name}: no volumes and no root image to boot`);
        await createOverlay(opts.rootImage, overlay);
      }
      writeRuntimeRecord(opts.runtimeDir, { vmm: opts.driver.kind, domain: opts.name, startedAt: new Date().toISOString() });
      vm = opts.restoreFrom ? await opts.driver.restore!(spec, opts.restoreFrom) : await opts.driver.start(await opts.driver.prepare(spec));
    } catch (err) {
      undoBeforeVmm?.();
      rmSync(opts.runtimeDir, { recursive: true, force: true });
      throw err;
    }
    // Socket and log locations come from the driver, so this works for any backend.
    const { vsockPath, consoleLogPath, user } = await vm.info();
    let relay: VsockRelay | undefined;
    let dataChannels: ExecDataListener | undefined;
    let ready: GuestReadySignal | undefined;
    try {
      // A restored guest's agent announced itself before the snapshot; it will not again.
      if (!opts.restoreFrom) ready = await GuestReadySignal.listen(`${vsockPath}_${AGENT_READY_VSOCK_PORT}`, user);
      await vm.waitReady(VMM_READY_TIMEOUT_MS);
      relay = await VsockRelay.listen(path.join(opts.runtimeDir, "agent.sock"), vsockPath, AGENT_VSOCK_PORT);
      dataChannels = await ExecDataListener.listen(`${vsockPath}_${EXEC_DATA_VSOCK_PORT}`, user);
      const timeout = opts.agentTimeoutMs ?? DEFAULT_AGENT_READY_TIMEOUT_MS;
      const deadline = Date.now() + timeout;
      let agent: AgentClient | undefined;
      try {
        if (ready && !(await ready.wait(timeout * READY_SIGNAL_SHARE, () => vm.isAlive())) && vm.isAlive()) {
          // An agent from before the signal existed: dial it anyway, at the old risk.
          opts.log?.(`${opts.name}: its agent did not announce itself on vsock port ${AGENT_READY_VSOCK_PORT}; dialing it anyway (rebuild the template to remove this delay)`);
        }
        ready?.close();
        const probe = await waitForGuestPort(vsockPath, AGENT_VSOCK_PORT, Math.max(1000, deadline - Date.now()), () => vm.isAlive());
        agent = new AgentClient(relay.listenPath);
        try {
          await agent.waitReady(Math.max(5000, deadline - Date.now()), () => vm.isAlive());
        } finally {
          probe.destroy();
        }
        // A restored guest still has the snapshot's hostname, random pool and clock.
        if (opts.restoreFrom) await agent.reidentify(opts.name);
      } catch (err) {
        agent?.close();
        if (err instanceof QvmError && err.code === "VMM_FAILED") {
          const exit = await vm.exited;
          throw new QvmError("VMM_FAILED", `${opts.name} stopped while booting (${exit.reason}); see ${consoleLogPath}`);
        }
        throw new QvmError(
          "AGENT_TIMEOUT",
          `the agent of ${opts.name} did not answer within ${Math.round(timeout / 1000)} s; the domain was stopped. Serial log: ${consoleLogPath} (last line: ${lastConsoleLine(consoleLogPath)})`,
          { cause: err },
        );
      }
      return new DomainVm(opts.name, vm, agent, relay, consoleLogPath, opts.log ?? (() => {}), dataChannels);
    } catch (err) {
      ready?.close();
      dataChannels?.close();
      await relay?.close();
      await vm.stop({ force: true }).catch(() => {});
      throw err;
    }
  }

  /**
   * Takes over a domain whose VMM kept running while no qvmd watched it (daemon restart). The
   * runtime record names the driver. Returns undefined when no live VMM is in runtimeDir; the
   * driver then cleans up what a dead one left.
   */
  static async attach(name: string, drivers: DriverTable, runtimeDir: string, logDir: string, log: (msg: string) => void = () => {}): Promise<DomainVm | undefined> {
    const record = readRuntimeRecord(runtimeDir, name);
    if (!record) {
      rmSync(runtimeDir, { recursive: true, force: true });
      return undefined;
    }
    const vm = await drivers.get(record.vmm).attach(runtimeDir, logDir);
    if (!vm) return undefined;
    const { vsockPath, consoleLogPath, state, user } = await vm.info();
    const relay = await VsockRelay.listen(path.join(runtimeDir, "agent.sock"), vsockPath, AGENT_VSOCK_PORT);
    if (state === "paused") relay.hold();
    const dataChannels = await ExecDataListener.listen(`${vsockPath}_${EXEC_DATA_VSOCK_PORT}`, user);
    return new DomainVm(name, vm, new AgentClient(relay.listenPath), relay, consoleLogPath, log, dataChannels);
  }

  /**
   * Clean shutdown through the agent (the ACPI power button when the agent is unreachable). When
   * the guest has not powered off within timeoutMs the VMM is killed, unless `kill` is false:
   * then a QvmError says so and the domain keeps running.
   */
  async shutdown(timeoutMs = 60_000, { kill = true }: { kill?: boolean } = {}): Promise<VmExit> {
    try {
      await this.agent.shutdown();
    } catch {
      return this.vm.stop({ timeoutMs: Math.min(timeoutMs, POWER_BUTTON_TIMEOUT_MS) });
    }
    const exit = await Promise.race([this.vm.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), timeoutMs).unref())]);
    if (exit) return exit;
    this.log(`${this.name} did not power off within ${Math.round(timeoutMs / 1000)} s of its agent's shutdown (last console line: ${lastConsoleLine(this.consoleLog)})${kill ? "; killing it" : ""}`);
    if (!kill) {
      throw new QvmError(
        "FAILED_PRECONDITION",
        `${this.name} did not power off within ${Math.round(timeoutMs / 1000)} s; it still runs: use \`qvm shutdown --force\` or \`qvm kill ${this.name}\``,
      );
    }
    return this.vm.stop({ force: true });
  }

  /** Pauses the VM; host bytes toward the guest are held back until resume (see VsockRelay.hold). */
  async pause(): Promise<void> {
    this.relay.hold();
    try {
      await this.vm.pause();
    } catch (err) {
      this.relay.release();
      throw err;
    }
  }

  async resume(): Promise<void> {
    await this.vm.resume();
    this.relay.release();
  }

  /**
   * Pauses the domain and writes its snapshot to DomainVmOptions.snapshotDir. qvmd's connections
   * to the guest (agent, relay, data channels) are closed first, so that none is frozen half open
   * in the snapshot; the domain is then only good for stopping.
   */
  async snapshot(): Promise<void> {
    const cap = this.vm.capabilities.snapshot;
    if (!cap) throw new QvmError("FAILED_PRECONDITION", `the VMM of ${this.name} cannot take snapshots`);
    await this.attachments.releaseQvmdHeld();
    await this.vm.pause();
    await cap.snapshot();
  }

  /** Lets go of the domain without stopping it (qvmd exiting); DomainVm.attach takes it back. */
  async detach(): Promise<void> {
    this.vm.detach();
    await this.attachments.releaseQvmdHeld();
  }

  kill(): Promise<VmExit> {
    return this.vm.stop({ force: true });
  }
}

/** The last non-empty line the guest wrote to its serial console: guest text, so clipped and quoted. */
function lastConsoleLine(file: string): string {
  try {
    const fd = openSync(file, "r");
    try {
      const size = fstatSync(fd).size;
      const buf = Buffer.alloc(Math.min(size, 4096));
      readSync(fd, buf, 0, buf.length, size - buf.length);
      const lines = buf.toString("latin1").split(/\r?\n/).map((l) => l.replace(/[^\x20-\x7e]/g, "").trim()).filter(Boolean);
      return quoteGuestText(lines.at(-1) ?? "");
    } finally {
      closeSync(fd);
    }
  } catch {
    return "none";
  }
}
