// The admin API's gRPC handlers. Each one parses its request (requests.ts), calls one core
// command and maps the result or the QvmError: nothing else. Streams are pumped by streams.ts.
import type { ServerUnaryCall, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";
import { domainClassFromWord, eventTypeFromWord, policyActionFromWord, powerStateFromWord, toGrpcError, type adminV1 } from "@qvm/protocol";
import type { QvmEvent } from "../base/events.js";
import type { DomainView, PciDeviceView, Qvmd, VolumeListing } from "../core/qvmd.js";
import type { PropertyView } from "../domain/registry.js";
import type { Decision } from "../qrexec/policy/evaluate.js";
import type { OrphanVolumes } from "../storage/volumes.js";
import type { UsbDeviceView } from "../usb/usb-devices.js";
import type { DomainClassWord, UsbPlugKind } from "@qvm/protocol/contracts";
import {
  domainName,
  domainOrGlobal,
  firewallLines,
  orphanId,
  parseClipboardCopy,
  parseClipboardPaste,
  parseCreateBackup,
  parseCreateDomain,
  parseRestoreBackup,
  parseRestoreOrphan,
  parseUsbRequest,
  parseVerifyBackup,
  pciDevices,
  usbPlugId,
  windowSize,
} from "./requests.js";
import { pumpAskPrompt, pumpBackup, pumpConsole, pumpEvents, pumpExec, pumpWindow } from "./streams.js";

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res) {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: unknown) => cb(toGrpcError(err)),
      );
  };
}

const empty = async (p: Promise<void>): Promise<Record<string, never>> => {
  await p;
  return {};
};

// ---- core results -> messages ------------------------------------------------------------------

// The core speaks Qubes' words (AppVM, Running, allow, domain-start); the API carries enums.
const domainMsg = (d: DomainView): adminV1.Domain => ({ ...d, class: domainClassFromWord(d.class), state: powerStateFromWord(d.state) });
const propMsg = (p: PropertyView): adminV1.Property => ({ ...p });
const eventMsg = (ev: QvmEvent): adminV1.Event => ({ ...ev, type: eventTypeFromWord(ev.type) });
const volumeMsg = (v: VolumeListing): adminV1.Volume => ({
  revisionsToKeep: v.revisionsToKeep,
  domain: v.domain,
  name: v.name,
  path: v.path,
  sizeBytes: v.sizeBytes,
  usageBytes: v.usageBytes,
  snapOnStart: v.flags.snapOnStart,
  saveOnStop: v.flags.saveOnStop,
  rw: v.flags.rw,
  revisions: v.revisions,
});
const orphanMsg = (o: OrphanVolumes): adminV1.OrphanVolumes => ({ ...o });
const pciMsg = (d: PciDeviceView): adminV1.PciDevice => ({ ...d });
const usbMsg = (d: UsbDeviceView): adminV1.UsbDevice => ({ ...d, kinds: [...d.kinds] });
const decisionMsg = (d: Decision): adminV1.CheckPolicyResponse => ({
  action: policyActionFromWord(d.action),
  target: d.action === "allow" ? d.target : "",
  targets: d.action === "ask" ? d.targets : [],
  defaultTarget: d.action === "ask" ? (d.defaultTarget ?? "") : "",
  user: d.action !== "deny" ? (d.user ?? "") : "",
  autostart: d.action !== "deny" && d.autostart,
  notify: d.notify,
  reason: d.action === "deny" ? d.reason : "",
  ruleFile: d.rule?.file ?? "",
  ruleLine: d.rule?.line ?? 0,
});

const backupDomainMsg = (d: { name: string; class: string; volumes: string[]; revision?: string; from?: string }): adminV1.BackupDomain => ({
  name: d.name,
  class: domainClassFromWord(d.class as DomainClassWord),
  volumes: d.volumes,
  revision: d.revision ?? "",
  restoredFrom: d.from !== undefined && d.from !== d.name ? d.from : "",
});
const backupResult = (r: Partial<adminV1.BackupResult>): adminV1.BackupResult => ({
  file: "",
  backupId: "",
  parentId: "",
  createdAt: "",
  domains: [],
  policyFiles: [],
  policyKept: [],
  bytesIn: 0,
  bytesWritten: 0,
  notes: [],
  ...r,
});

export function adminService(qvmd: Qvmd): UntypedServiceImplementation {
  const impl: adminV1.QvmAdminServer = {
    getDaemonInfo: unary(() => qvmd.info()),
    importTemplates: unary(async () => ({ registered: await qvmd.importTemplates() })),

    listDomains: unary(() => ({ domains: qvmd.list().map(domainMsg) })),
    getDomain: unary((r: adminV1.GetDomainRequest) => ({ domain: domainMsg(qvmd.get(domainName(r.name))) })),
    createDomain: unary(async (r: adminV1.CreateDomainRequest) => ({
      domain: domainMsg(await qvmd.create(parseCreateDomain(r), r.passphrase)),
    })),
    cloneDomain: unary(async (r: adminV1.CloneDomainRequest) => ({ domain: domainMsg(await qvmd.clone(domainName(r.source), domainName(r.name))) })),
    removeDomain: unary((r: adminV1.RemoveDomainRequest) => empty(qvmd.remove(domainName(r.name)))),

    listProperties: unary((r: adminV1.ListPropertiesRequest) => ({ properties: qvmd.properties(domainOrGlobal(r.domain)).map(propMsg) })),
    getProperty: unary((r: adminV1.GetPropertyRequest) => ({ property: propMsg(qvmd.getProperty(domainOrGlobal(r.domain), r.name)) })),
    setProperty: unary(async (r: adminV1.SetPropertyRequest) => ({ property: propMsg(await qvmd.setProperty(domainOrGlobal(r.domain), r.name, r.value)) })),
    resetProperty: unary(async (r: adminV1.ResetPropertyRequest) => ({ property: propMsg(await qvmd.resetProperty(domainOrGlobal(r.domain), r.name)) })),

    listFeatures: unary((r: adminV1.ListFeaturesRequest) => ({ features: qvmd.features(domainName(r.domain)) })),
    setFeature: unary((r: adminV1.SetFeatureRequest) => empty(qvmd.setFeature(domainName(r.domain), r.name, r.value))),
    removeFeature: unary((r: adminV1.RemoveFeatureRequest) => empty(qvmd.removeFeature(domainName(r.domain), r.name))),
    listTags: unary((r: adminV1.ListTagsRequest) => ({ tags: qvmd.tags(domainName(r.domain)) })),
    addTag: unary((r: adminV1.AddTagRequest) => empty(qvmd.addTag(domainName(r.domain), r.tag))),
    removeTag: unary((r: adminV1.RemoveTagRequest) => empty(qvmd.removeTag(domainName(r.domain), r.tag))),

    getFirewall: unary((r: adminV1.GetFirewallRequest) => ({ rules: qvmd.getFirewall(domainName(r.domain)) })),
    setFirewall: unary((r: adminV1.SetFirewallRequest) => empty(qvmd.setFirewall(domainName(r.domain), firewallLines(r.rules)))),
    reloadFirewall: unary((r: adminV1.ReloadFirewallRequest) => empty(qvmd.reloadFirewall(domainName(r.domain)))),

    listPciDevices: unary((r: adminV1.ListPciDevicesRequest) => {
      const { devices, iommu } = qvmd.pciDevices(r.domain ? domainName(r.domain) : "");
      return { devices: devices.map(pciMsg), iommu };
    }),
    attachPciDevice: unary((r: adminV1.AttachPciDeviceRequest) => qvmd.attachPci(domainName(r.domain), pciDevices(r.devices), r.persistent)),
    detachPciDevice: unary((r: adminV1.DetachPciDeviceRequest) => qvmd.detachPci(domainName(r.domain), pciDevices(r.devices))),

    // USB devices of service domains (docs/usb.md).
    listUsbDevices: unary((r: adminV1.ListUsbDevicesRequest) => ({ devices: qvmd.usbDevices(r.backend ? domainName(r.backend) : "").map(usbMsg) })),
    attachUsbDevice: unary(async (r: adminV1.AttachUsbDeviceRequest) => {
      const { domain, backend, busid } = parseUsbRequest(r);
      return { device: usbMsg(await qvmd.attachUsb(domain, backend, busid, r.persistent)) };
    }),
    detachUsbDevice: unary((r: adminV1.DetachUsbDeviceRequest) => {
      const { domain, backend, busid } = parseUsbRequest(r);
      return empty(qvmd.detachUsb(domain, backend, busid));
    }),
    // Emulated devices (domain/usb-plugs.ts checks the kind, the image and the bounds).
    plugUsbDevice: unary(async (r: adminV1.PlugUsbDeviceRequest) => ({
      plug: await qvmd.plugUsb(domainName(r.domain), { kind: r.kind as UsbPlugKind, path: r.path || undefined, readOnly: r.readOnly }),
    })),
    unplugUsbDevice: unary((r: adminV1.UnplugUsbDeviceRequest) => empty(qvmd.unplugUsb(domainName(r.domain), usbPlugId(r.id)))),
    listUsbPlugs: unary((r: adminV1.ListUsbPlugsRequest) => ({ plugs: qvmd.usbPlugs(domainName(r.domain)) })),

    startDomain: unary(async (r: adminV1.StartDomainRequest) => ({ domain: domainMsg(await qvmd.start(domainName(r.name), r.passphrase)) })),
    shutdownDomain: unary(async (r: adminV1.ShutdownDomainRequest) => ({ reason: await qvmd.shutdown(domainName(r.name), { wait: r.wait, force: r.force }) })),
    killDomain: unary((r: adminV1.KillDomainRequest) => empty(qvmd.kill(domainName(r.name)))),
    pauseDomain: unary((r: adminV1.PauseDomainRequest) => empty(qvmd.pause(domainName(r.name)))),
    unpauseDomain: unary((r: adminV1.UnpauseDomainRequest) => empty(qvmd.unpause(domainName(r.name)))),

    listVolumes: unary(async (r: adminV1.ListVolumesRequest) => ({ volumes: (await qvmd.listVolumes(domainName(r.domain))).map(volumeMsg) })),
    revertVolume: unary(async (r: adminV1.RevertVolumeRequest) => ({ revision: await qvmd.revertVolume(domainName(r.domain), r.volume, r.revision, r.passphrase) })),
    configVolume: unary((r: adminV1.ConfigVolumeRequest) => empty(qvmd.configVolume(domainName(r.domain), r.volume, r.property, r.value))),
    changePassphrase: unary((r: adminV1.ChangePassphraseRequest) => empty(qvmd.changePassphrase(domainName(r.domain), r.oldPassphrase, r.newPassphrase))),
    resizeVolume: unary((r: adminV1.ResizeVolumeRequest) => empty(qvmd.resizeVolume(domainName(r.domain), r.volume, r.sizeBytes, r.passphrase))),
    listOrphanVolumes: unary(() => ({ orphans: qvmd.orphanVolumes().map(orphanMsg) })),
    restoreOrphanVolumes: unary(async (r: adminV1.RestoreOrphanVolumesRequest) => ({ domain: domainMsg(await qvmd.restoreOrphan(parseRestoreOrphan(r))) })),
    purgeOrphanVolumes: unary(async (r: adminV1.PurgeOrphanVolumesRequest) => ({ purged: orphanMsg(await qvmd.purgeOrphan(orphanId(r.id))) })),

    // Backups (vault/): the request's passphrase is used and dropped, never logged.
    createBackup: (call) =>
      pumpBackup(call, async (listener) => {
        const r = await qvmd.createBackup(parseCreateBackup(call.request), listener);
        return backupResult({ ...r, parentId: r.parentId ?? "", domains: r.domains.map(backupDomainMsg) });
      }),
    verifyBackup: (call) =>
      pumpBackup(call, async (listener) => {
        const r = await qvmd.verifyBackup(parseVerifyBackup(call.request), listener);
        return backupResult({ ...r, parentId: r.parentId ?? "", domains: r.domains.map(backupDomainMsg), bytesIn: r.bytesChecked });
      }),
    restoreBackup: (call) =>
      pumpBackup(call, async (listener) => {
        const r = await qvmd.restoreBackup(parseRestoreBackup(call.request), listener);
        return backupResult({
          file: call.request.file,
          backupId: r.backupId,
          createdAt: r.createdAt,
          domains: r.domains.map((d) => backupDomainMsg({ ...d, volumes: [] })),
          policyFiles: r.policyFiles.restored,
          policyKept: r.policyFiles.kept,
          notes: r.notes,
        });
      }),

    checkPolicy: unary((r: adminV1.CheckPolicyRequest) => decisionMsg(qvmd.checkPolicy({ service: r.service, argument: r.argument, source: r.source, target: r.target }))),
    askPrompt: (call) => pumpAskPrompt(qvmd, call),
    exec: (call) => pumpExec(qvmd, call),
    console: (call) => pumpConsole(qvmd, call),

    openWindow: unary(async (r: adminV1.OpenWindowRequest) => {
      const target = r.dispvm ? { dispvm: r.dispvm === "@default" ? "" : domainName(r.dispvm) } : { domain: domainName(r.domain) };
      const w = await qvmd.openWindow(target, r.argv, windowSize(r.width, r.height), r.noAutostart);
      return { window: w };
    }),
    listWindows: unary((r: adminV1.ListWindowsRequest) => ({ windows: qvmd.listWindows(domainOrGlobal(r.domain)) })),
    resizeWindow: unary((r: adminV1.ResizeWindowRequest) => empty(qvmd.resizeWindow(domainName(r.domain), r.windowId, r.width, r.height))),
    closeWindow: unary((r: adminV1.CloseWindowRequest) => empty(qvmd.closeWindow(domainName(r.domain), r.windowId))),
    windowStream: (call) => pumpWindow(qvmd, call),

    // The global clipboard (docs/gui.md): its content travels only in a paste and a take.
    clipboardCopy: unary(async (r: adminV1.ClipboardCopyRequest) => {
      const { domain, from } = parseClipboardCopy(r);
      return qvmd.clipboardCopy(domain, from);
    }),
    clipboardPaste: unary(async (r: adminV1.ClipboardPasteRequest) => {
      const { domain, into } = parseClipboardPaste(r);
      return qvmd.clipboardPaste(domain, into);
    }),
    getClipboard: unary(() => qvmd.clipboard()),
    setClipboard: unary((r: adminV1.SetClipboardRequest) => qvmd.setClipboard(r.data)),
    takeClipboard: unary(() => qvmd.takeClipboard()),
    watchEvents: (call) => pumpEvents(qvmd, call, eventMsg),
  };
  return impl as unknown as UntypedServiceImplementation;
}
