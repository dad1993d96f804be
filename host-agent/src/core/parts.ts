// The parts the composition root assembles and the core commands use: one object, so that
// Qvmd and the boot steps (boot.ts) share them without importing each other.
import type { ImageStore } from "@qvm/images";
import type { EventBus } from "../base/events.js";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import type { VolumeStore } from "../storage/volumes.js";
import type { ResourceLimits } from "../domain/admission.js";
import type { BootPlanner } from "../domain/boot-plan.js";
import type { DispVms } from "../domain/dispvms.js";
import type { DispVmPreloads } from "../domain/dispvm-preload.js";
import type { ProcessLauncher } from "../domain/launcher.js";
import type { DomainPaths } from "../domain/paths.js";
import type { DomainRegistry } from "../domain/registry.js";
import type { DomainRunner } from "../domain/runner.js";
import type { FirewallExpiry } from "../domain/firewall-expiry.js";
import type { DomainWindows } from "../domain/windows.js";
import type { GlobalClipboard } from "../clipboard/global-clipboard.js";
import type { NetworkService } from "../network/service.js";
import type { UsbDevices } from "../usb/usb-devices.js";
import type { UsbPlugs } from "../domain/usb-plugs.js";
import type { PciHost } from "../vmm/pci/sysfs.js";
import type { AskBroker } from "../qrexec/prompts.js";
import type { QrexecRouter } from "../qrexec/router.js";
import type { PolicyCache } from "../qrexec/policy/loader.js";

export interface QvmdParts {
  version: string;
  dataDir: string;
  runtimeDir: string;
  images: ImageStore;
  volumes: VolumeStore;
  events: EventBus;
  locks: KeyedMutex;
  registry: DomainRegistry;
  runner: DomainRunner;
  planner: BootPlanner;
  dispvms: DispVms;
  /** Preloaded disposables of each template for disposables (started by boot). */
  preloads: DispVmPreloads;
  launcher: ProcessLauncher;
  asks: AskBroker;
  router: QrexecRouter;
  policyDir: string;
  /** The parsed policy, re-read only when a policy file changes (shared with the router). */
  policy: PolicyCache;
  paths: DomainPaths;
  limits: ResourceLimits;
  /** Re-announces a domain's firewall when one of its rules expires (started by boot). */
  firewallExpiry: FirewallExpiry;
  /** Links between running domains and what their agents are told about the network. */
  network: NetworkService;
  /** Running domains' windows (docs/gui.md). */
  windows: DomainWindows;
  /** The global inter-domain clipboard (in memory only). */
  clipboard: GlobalClipboard;
  /** USB devices of service domains and their attachments (in memory; assignments in the records). */
  usb: UsbDevices;
  /** Emulated USB devices of domains (`qvm usb plug`), stored with them. */
  usbPlugs: UsbPlugs;
  /** The host's PCI devices (sysfs), for `qvm pci`. */
  pci: PciHost;
  accel: () => string;
  log: (msg: string) => void;
}
