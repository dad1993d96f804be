// The composition root: builds qvmd's core from its parts. Everything with an outside effect
// (the domain store, volumes, VMM drivers, clock, randomness) comes in through ComposeOptions,
// so tests can give fakes and a second VMM driver is one more entry in `drivers`.
import path from "node:path";
import { ImageIntegrity, type ImageStore } from "@qvm/images";
import { systemClock, type Clock } from "../base/clock.js";
import { EventBus } from "../base/events.js";
import { KeyedMutex } from "../base/keyed-mutex.js";
import { DomainStore } from "../store/domain-store.js";
import { VolumeStore } from "../storage/volumes.js";
import type { VmmDriver } from "../vmm/driver.js";
import { DriverTable } from "../vmm/drivers.js";
import { defaultLimits, type ResourceLimits } from "../domain/admission.js";
import { BootPlanner } from "../domain/boot-plan.js";
import { DispVms } from "../domain/dispvms.js";
import { DispVmPreloads } from "../domain/dispvm-preload.js";
import { ProcessLauncher } from "../domain/launcher.js";
import { DomainPaths } from "../domain/paths.js";
import { DomainRegistry } from "../domain/registry.js";
import { volumeRunStorage } from "../domain/run-storage.js";
import { DomainRunner } from "../domain/runner.js";
import { PciHost } from "../vmm/pci/sysfs.js";
import { FirewallExpiry } from "../domain/firewall-expiry.js";
import { DomainWindows } from "../domain/windows.js";
import { UsbPlugs } from "../domain/usb-plugs.js";
import { domainVmFactory, type VmFactory } from "../domain/vm-factory.js";
import { DispvmSnapshots } from "../domain/dispvm-snapshots.js";
import type { Attacher } from "../domain/attachments.js";
import { logRotationAttacher } from "../domain/log-rotation.js";
import type { VmmUidRange } from "../domain/vmm-users.js";
import { LinkFiles } from "../network/link-files.js";
import { NetLinkPlanner } from "../network/link-planner.js";
import { NetworkService } from "../network/service.js";
import { qrexecHost, qrexecListenerAttacher, systemFacts } from "../qrexec/host.js";
import { GlobalClipboard } from "../clipboard/global-clipboard.js";
import { clipboardPastePolicy } from "../clipboard/paste-policy.js";
import { PolicyCache, policyDirOf } from "../qrexec/policy/loader.js";
import { AskBroker } from "../qrexec/prompts.js";
import { DEFAULT_ROUTER_LIMITS, QrexecRouter, type RouterLimits } from "../qrexec/router.js";
import { QrexecGrants } from "../qrexec/grants.js";
import { UsbDevices, type UsbTimeouts } from "../usb/usb-devices.js";
import { Qvmd } from "./qvmd.js";

export const DEFAULT_ASK_TIMEOUT_MS = 60_000;

export interface ComposeOptions {
  dataDir: string;
  runtimeDir: string;
  images: ImageStore;
  /** The VMM drivers this qvmd offers, by their kind; domains pick one with `vmm`. */
  drivers: VmmDriver[];
  /** What new domains run under ("kvm" or "tcg"), for the daemon info. */
  accel: () => string;
  log?: (msg: string) => void;
  version?: string;
  /** qrexec limits: calls a domain may hold at once, time to send a request, time a person has to answer. */
  qrexec?: Partial<RouterLimits> & { askTimeoutMs?: number };
  /** What may run at once (domains, guest memory, disk reserve, disposables); unset ones: defaultLimits(). */
  limits?: Partial<ResourceLimits>;
  /** Defaults: the domain store and volumes in dataDir, real VMs, the system clock, Math.random. */
  store?: DomainStore;
  volumes?: VolumeStore;
  vms?: VmFactory;
  clock?: Clock;
  random?: () => number;
  /** The uid range each domain's VMM gets a uid from; undefined: VMMs run as qvmd's user (not root). */
  vmmUids?: VmmUidRange;
  /** Attachers beyond the built-in ones (the qrexec listener). */
  attachers?: Attacher[];
  /** The host's PCI devices (`qvm pci`); default: this host's sysfs. Give the QEMU driver the same one. */
  pci?: PciHost;
  /** How long USB attaches and detaches may take (tests shorten them). */
  usbTimeouts?: Partial<UsbTimeouts>;
}

export function composeQvmd(opts: ComposeOptions): Qvmd {
  const log = opts.log ?? (() => {});
  const clock = opts.clock ?? systemClock;
  const events = new EventBus(clock);
  const locks = new KeyedMutex();
  const store = opts.store ?? DomainStore.open(opts.dataDir);
  const volumes = opts.volumes ?? new VolumeStore(opts.dataDir);
  const drivers = new DriverTable(opts.drivers);
  const paths = new DomainPaths(opts.dataDir, opts.runtimeDir);
  const policyDir = policyDirOf(opts.dataDir);
  const limits: ResourceLimits = { ...defaultLimits(), ...definedOnly(opts.limits ?? {}) };
  const attachers: Attacher[] = [];
  // The registry asks the runner whether a domain runs; the runner is made right after it.
  let runner: DomainRunner | undefined;
  const registry = new DomainRegistry(store, events, (name) => runner?.isRunning(name) ?? false, clock);
  const pci = opts.pci ?? new PciHost();
  const linkFiles = new LinkFiles();
  const links = new NetLinkPlanner({ registry, paths, files: linkFiles });
  const integrity = new ImageIntegrity(opts.images, log);
  const planner = new BootPlanner({ registry, volumes, images: opts.images, drivers, paths, isRunning: (n) => runner?.isRunning(n) ?? false, vmmUids: opts.vmmUids, links, pci, integrity });
  runner = new DomainRunner({
    registry,
    planner,
    vms: opts.vms ?? domainVmFactory(drivers, paths, log, new DispvmSnapshots(path.join(opts.dataDir, "dispvm-snapshots"), log)),
    storage: volumeRunStorage(volumes, registry, log),
    attachers,
    events,
    locks,
    paths,
    log,
    limits,
  });
  const dispvms = new DispVms({ registry, volumes, runner, locks, random: opts.random ?? Math.random, paths, limits });
  const launcher = new ProcessLauncher({ registry, runner, dispvms, log });
  const asks = new AskBroker(opts.qrexec?.askTimeoutMs ?? DEFAULT_ASK_TIMEOUT_MS);
  const q = opts.qrexec ?? {};
  const policy = new PolicyCache(policyDir);
  // One-shot grants (a USB attach's qubes.USB call): in memory only, checked before the policy.
  const grants = new QrexecGrants(clock);
  const router = new QrexecRouter(
    qrexecHost({ registry, launcher, events, asks, policy, log }),
    {
      maxCallsPerDomain: q.maxCallsPerDomain ?? DEFAULT_ROUTER_LIMITS.maxCallsPerDomain,
      requestTimeoutMs: q.requestTimeoutMs ?? DEFAULT_ROUTER_LIMITS.requestTimeoutMs,
    },
    grants,
  );
  const firewallExpiry = new FirewallExpiry({
    events,
    clock,
    nextExpiry: (name) => registry.firewallExpiry(name),
    domains: () => registry.list().map((r) => r.name),
  });
  const network = new NetworkService({ registry, runner, paths, files: linkFiles, events, log });
  network.listen();
  // Preloaded disposables (Qubes' preload-dispvm-max): handed out by dispvms.create; a hand-out
  // returns once the netvm enforces the disposable's firewall.
  const preloads = new DispVmPreloads({ registry, runner, dispvms, events, clock, log, settled: () => network.settled() });
  dispvms.usePool(preloads);
  const windows = new DomainWindows({ registry, runner, paths, events, dispvms, log });
  // The global clipboard (docs/gui.md): in memory only, so a qvmd restart empties it. A paste
  // asks the same policy as qrexec calls (qubes.ClipboardPaste), read afresh at each paste.
  const domains = runner; // the DomainRunner itself: `runner` is a let, which a closure would see as possibly undefined
  const clipboard = new GlobalClipboard({
    agentOf: (name) => domains.running(name).agent,
    windowsOf: (name) => windows.list(name),
    decide: clipboardPastePolicy(
      () => policy.rules(),
      () => systemFacts(registry),
    ),
    events,
    clock,
    log,
  });
  // USB devices of service domains (docs/usb.md): followed per running domain, attached under a
  // one-shot grant; attachments live in this process only.
  const usb = new UsbDevices({
    registry,
    runner: domains,
    events,
    grants,
    rules: () => policy.rules(),
    facts: () => systemFacts(registry),
    clock,
    log,
    timeouts: opts.usbTimeouts,
  });
  // Emulated USB devices of a domain (`qvm usb plug`): stored with it, live when its VMM can.
  const usbPlugs = new UsbPlugs({ registry, runner: domains, locks, log });
  attachers.push(
    network.attacher(),
    windows.attacher(),
    qrexecListenerAttacher(router),
    usb.attacher(),
    logRotationAttacher((name) => paths.logDirOf(name)),
    ...(opts.attachers ?? []),
  );
  return new Qvmd({
    version: opts.version ?? "0.1.0",
    dataDir: opts.dataDir,
    runtimeDir: opts.runtimeDir,
    images: opts.images,
    volumes,
    events,
    locks,
    registry,
    runner,
    planner,
    dispvms,
    preloads,
    launcher,
    asks,
    router,
    policyDir,
    policy,
    paths,
    limits,
    firewallExpiry,
    network,
    pci,
    windows,
    clipboard,
    usb,
    usbPlugs,
    accel: opts.accel,
    log,
  });
}

/** The options given, without the keys set to undefined (flags not given). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
