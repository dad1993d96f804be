// A fake qvmd for the CLI's tests: a grpc-js server with the real QvmAdmin service definition on
// a temporary Unix socket, serving canned domains (kept in words, sent as enums, as qvmd does)
// and properties, recording every request, and running a tiny "exec" (echo stdin upper-cased,
// exit with a chosen code or signal).
import { Server, ServerCredentials, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { QvmError, adminV1, domainClassFromWord, domainClassWord, powerStateFromWord, toGrpcError, type DomainInWords } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES, MAX_USB_PLUGS, USB_PLUG_KINDS, isUsbBusId, parsePciAddress, parseRuleApi, pasteDeniedMessage, usbDeviceName } from "@qvm/protocol/contracts";
import { fakeDomain } from "./domains.js";

export interface FakeQvmd {
  runtimeDir: string;
  socketPath: string;
  domains: DomainInWords[];
  properties: Map<string, adminV1.Property[]>;
  features: Map<string, Record<string, string>>;
  tags: Map<string, string[]>;
  /** Firewall rules (API lines) by domain; a domain not here has the one rule action=accept. */
  firewall: Map<string, string[]>;
  /** The host's PCI devices as ListPciDevices sends them (assignedTo kept here), and whether it has an IOMMU. */
  pci: adminV1.PciDevice[];
  iommu: boolean;
  /** Windows as ListWindows sends them; selections by "domain:window" (what a copy reads), pastes written into them. */
  windows: adminV1.Window[];
  selections: Map<string, string>;
  /** The global clipboard as qvmd holds it, and the pastes the fake "policy" denies ("source>target"). */
  clipboard: { data: Buffer; source: string; copiedAtMs: number };
  deniedPastes: Set<string>;
  /** USB devices as ListUsbDevices sends them (attachedTo and persistent kept here), and emulated devices (plugs) by domain. */
  usb: adminV1.UsbDevice[];
  usbPlugs: Map<string, adminV1.UsbPlug[]>;
  /** Every request, in order, as [method, request]. */
  calls: Array<[string, unknown]>;
  execStarts: adminV1.ExecStart[];
  execSignals: string[];
  close(): Promise<void>;
}

/** The Domain message qvmd would send for `d`. */
function domainMsg(d: DomainInWords): adminV1.Domain {
  return { ...d, class: domainClassFromWord(d.class), state: powerStateFromWord(d.state) };
}

function notFound(name: string): QvmError {
  return new QvmError("NOT_FOUND", `domain "${name}" does not exist`);
}

/**
 * Exec behaviour, from the command: argv ["exit", N] exits with N at once; ["kill", SIG] reports
 * death by SIG; ["wait", MS] exits 0 after MS milliseconds; anything else echoes stdin
 * upper-cased to stdout, writes "err" to stderr and exits 3 at end of stdin. A signal message
 * ends any of them as killed by that signal.
 */
function serveExec(fake: FakeQvmd, call: ServerDuplexStream<adminV1.ExecRequest, adminV1.ExecResponse>): void {
  let done = false;
  const send = (msg: adminV1.ExecResponse["msg"]) => !done && call.write({ msg });
  const exit = (code: number, signal = "") => {
    if (done) return;
    send({ $case: "exit", value: { code, signal } });
    done = true;
    call.end();
  };
  call.on("data", (req: adminV1.ExecRequest) => {
    const m = req.msg;
    if (!m) return;
    switch (m.$case) {
      case "start": {
        fake.execStarts.push(m.value);
        if (!fake.domains.some((d) => d.name === m.value.domain)) {
          done = true;
          call.emit("error", toGrpcError(notFound(m.value.domain)));
          return;
        }
        send({ $case: "started", value: { pid: 42, domain: "work" } });
        const [prog, arg] = m.value.argv;
        if (prog === "exit") exit(Number(arg));
        else if (prog === "kill") exit(0, arg ?? "SIGKILL");
        else if (prog === "wait") setTimeout(() => exit(0), Number(arg));
        return;
      }
      case "stdin":
        send({ $case: "stdout", value: Buffer.from(m.value.toString("utf8").toUpperCase()) });
        return;
      case "closeStdin":
        send({ $case: "stderr", value: Buffer.from("err") });
        exit(3);
        return;
      case "signal":
        fake.execSignals.push(m.value);
        exit(0, m.value);
        return;
      case "resize":
        return;
    }
  });
  call.on("error", () => (done = true));
}

function clipboardState(fake: FakeQvmd): adminV1.ClipboardState {
  return { source: fake.clipboard.source, size: fake.clipboard.data.length, copiedAtMs: fake.clipboard.copiedAtMs };
}

export async function startFakeQvmd(): Promise<FakeQvmd> {
  const runtimeDir = mkdtempSync(path.join(os.tmpdir(), "qvm-cli-test-"));
  const socketPath = path.join(runtimeDir, "qvmd.sock");
  const server = new Server();
  const fake: FakeQvmd = {
    runtimeDir,
    socketPath,
    domains: [],
    properties: new Map(),
    features: new Map(),
    tags: new Map(),
    firewall: new Map(),
    pci: [],
    iommu: true,
    windows: [],
    selections: new Map(),
    clipboard: { data: Buffer.alloc(0), source: "", copiedAtMs: 0 },
    deniedPastes: new Set(),
    usb: [],
    usbPlugs: new Map(),
    calls: [],
    execStarts: [],
    execSignals: [],
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        rmSync(runtimeDir, { recursive: true, force: true });
        resolve();
      }),
  };
  const find = (name: string) => {
    const d = fake.domains.find((x) => x.name === name);
    if (!d) throw notFound(name);
    return d;
  };
  /** The selection of a window the fake lists; NOT_FOUND as qvmd says it. */
  const knownWindow = (domain: string, id: number): string => {
    find(domain);
    if (!fake.windows.some((w) => w.domain === domain && w.windowId === id)) throw new QvmError("NOT_FOUND", `${domain} has no window ${id}`);
    return fake.selections.get(`${domain}:${id}`) ?? "";
  };
  // Every unary method: record, run, map QvmError onto the status + trailer qvmd sends.
  const unary =
    <Req, Res>(method: string, fn: (req: Req) => Res) =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      fake.calls.push([method, call.request]);
      try {
        cb(null, fn(call.request));
      } catch (err) {
        cb(toGrpcError(err));
      }
    };
  const impl: Partial<adminV1.QvmAdminServer> = {
    getDaemonInfo: unary("getDaemonInfo", () => ({ version: "test", dataDir: "/d", runtimeDir, pid: process.pid, accel: "tcg", imagesDir: "/d/images" })),
    listDomains: unary("listDomains", () => ({ domains: fake.domains.map(domainMsg) })),
    getDomain: unary("getDomain", (r: adminV1.GetDomainRequest) => ({ domain: domainMsg(find(r.name)) })),
    createDomain: unary("createDomain", (r: adminV1.CreateDomainRequest) => {
      if (!r.label) throw new QvmError("INVALID_ARGUMENT", "a label is required");
      if (fake.domains.some((d) => d.name === r.name)) throw new QvmError("ALREADY_EXISTS", `domain "${r.name}" already exists`);
      // UNSPECIFIED means AppVM, as in qvmd.
      const d = fakeDomain(r.name, { class: r.class ? domainClassWord(r.class) : "AppVM", label: r.label, template: r.template });
      fake.domains.push(d);
      return { domain: domainMsg(d) };
    }),
    cloneDomain: unary("cloneDomain", (r: adminV1.CloneDomainRequest) => {
      const d = { ...find(r.source), name: r.name };
      fake.domains.push(d);
      return { domain: domainMsg(d) };
    }),
    removeDomain: unary("removeDomain", (r: adminV1.RemoveDomainRequest) => {
      find(r.name);
      fake.domains = fake.domains.filter((d) => d.name !== r.name);
      return {};
    }),
    listProperties: unary("listProperties", (r: adminV1.ListPropertiesRequest) => {
      if (r.domain) find(r.domain);
      return { properties: fake.properties.get(r.domain) ?? [] };
    }),
    getProperty: unary("getProperty", (r: adminV1.GetPropertyRequest) => {
      const p = (fake.properties.get(r.domain) ?? []).find((x) => x.name === r.name);
      if (!p) throw new QvmError("INVALID_ARGUMENT", `unknown property "${r.name}"`);
      return { property: p };
    }),
    setProperty: unary("setProperty", (r: adminV1.SetPropertyRequest) => ({ property: { name: r.name, value: r.value, type: "str", source: "own", doc: "" } })),
    resetProperty: unary("resetProperty", (r: adminV1.ResetPropertyRequest) => ({ property: { name: r.name, value: "", type: "str", source: "default", doc: "" } })),
    listFeatures: unary("listFeatures", (r: adminV1.ListFeaturesRequest) => ({ features: fake.features.get(find(r.domain).name) ?? {} })),
    setFeature: unary("setFeature", () => ({})),
    removeFeature: unary("removeFeature", () => ({})),
    listTags: unary("listTags", (r: adminV1.ListTagsRequest) => ({ tags: fake.tags.get(find(r.domain).name) ?? [] })),
    addTag: unary("addTag", () => ({})),
    removeTag: unary("removeTag", () => ({})),
    getFirewall: unary("getFirewall", (r: adminV1.GetFirewallRequest) => ({ rules: fake.firewall.get(find(r.domain).name) ?? ["action=accept"] })),
    setFirewall: unary("setFirewall", (r: adminV1.SetFirewallRequest) => {
      find(r.domain);
      r.rules.forEach((line) => parseRuleApi(line));
      fake.firewall.set(r.domain, [...r.rules]);
      return {};
    }),
    reloadFirewall: unary("reloadFirewall", (r: adminV1.ReloadFirewallRequest) => (find(r.domain), {})),
    // As qvmd: persistent only, one domain per device, the domain's state decides next_start.
    listPciDevices: unary("listPciDevices", (r: adminV1.ListPciDevicesRequest) => {
      if (r.domain) find(r.domain);
      return { devices: fake.pci.filter((d) => !r.domain || d.assignedTo === r.domain), iommu: fake.iommu };
    }),
    attachPciDevice: unary("attachPciDevice", (r: adminV1.AttachPciDeviceRequest) => {
      const d = find(r.domain);
      const bdfs = r.devices.map(parsePciAddress);
      if (!r.persistent) throw new QvmError("FAILED_PRECONDITION", `a PCI device cannot be attached live (microvm has no hot-plug): assign it with \`qvm pci attach --persistent ${r.domain} ${bdfs.join(" ")}\``);
      const devs = bdfs.map((bdf) => {
        const dev = fake.pci.find((x) => x.bdf === bdf);
        if (!dev) throw new QvmError("NOT_FOUND", `this host has no PCI device ${bdf}; see \`qvm pci ls\``);
        if (dev.assignedTo) throw new QvmError("FAILED_PRECONDITION", `${bdf} is assigned to ${dev.assignedTo}`);
        return dev;
      });
      for (const dev of devs) dev.assignedTo = r.domain;
      return { devices: bdfs, nextStart: d.state !== "Halted" };
    }),
    detachPciDevice: unary("detachPciDevice", (r: adminV1.DetachPciDeviceRequest) => {
      const d = find(r.domain);
      const bdfs = r.devices.map(parsePciAddress);
      for (const bdf of bdfs) {
        const dev = fake.pci.find((x) => x.bdf === bdf && x.assignedTo === r.domain);
        if (!dev) throw new QvmError("NOT_FOUND", `${bdf} is not assigned to ${r.domain}`);
        dev.assignedTo = "";
      }
      return { devices: bdfs, nextStart: d.state !== "Halted" };
    }),
    // USB, with qvmd's rules in small: a running frontend, one domain per device, not the backend
    // itself; detach drops the assignment (and a device not present with it); plugs are live when
    // the domain runs.
    listUsbDevices: unary("listUsbDevices", (r: adminV1.ListUsbDevicesRequest) => {
      if (r.backend) find(r.backend);
      return { devices: fake.usb.filter((d) => !r.backend || d.backend === r.backend) };
    }),
    attachUsbDevice: unary("attachUsbDevice", (r: adminV1.AttachUsbDeviceRequest) => {
      const d = find(r.domain);
      const name = usbDeviceName(r.backend, r.busid);
      if (!isUsbBusId(r.busid)) throw new QvmError("INVALID_ARGUMENT", `bad bus id ${JSON.stringify(r.busid)}`);
      const dev = fake.usb.find((x) => x.backend === r.backend && x.busid === r.busid && x.present);
      if (!dev) throw new QvmError("NOT_FOUND", `${r.backend} has no USB device ${r.busid}; see \`qvm usb list ${r.backend}\``);
      if (r.backend === r.domain) throw new QvmError("INVALID_ARGUMENT", `${name} is ${r.backend}'s own device: it cannot be attached to its backend; attach it to another domain`);
      if (d.state === "Halted") throw new QvmError("FAILED_PRECONDITION", `${r.domain} is not running: start it first (\`qvm start ${r.domain}\`); a USB device is attached to a running domain`);
      if (dev.attachedTo && dev.attachedTo !== r.domain) throw new QvmError("FAILED_PRECONDITION", `${name} is attached to ${dev.attachedTo}: a device goes to one domain at a time; detach it there first (\`qvm usb detach ${dev.attachedTo} ${name}\`)`);
      dev.attachedTo = r.domain;
      dev.persistent = r.persistent;
      return { device: dev };
    }),
    detachUsbDevice: unary("detachUsbDevice", (r: adminV1.DetachUsbDeviceRequest) => {
      find(r.domain);
      const name = usbDeviceName(r.backend, r.busid);
      const dev = fake.usb.find((x) => x.backend === r.backend && x.busid === r.busid && x.attachedTo === r.domain);
      if (!dev) throw new QvmError("NOT_FOUND", `${name} is not attached to ${r.domain}; see \`qvm usb list\``);
      if (!dev.present) fake.usb = fake.usb.filter((x) => x !== dev);
      dev.attachedTo = "";
      dev.persistent = false;
      return {};
    }),
    plugUsbDevice: unary("plugUsbDevice", (r: adminV1.PlugUsbDeviceRequest) => {
      const d = find(r.domain);
      if (!(USB_PLUG_KINDS as readonly string[]).includes(r.kind)) throw new QvmError("INVALID_ARGUMENT", `unknown USB device kind ${JSON.stringify(r.kind)}`);
      if (r.kind === "disk" && !r.path.startsWith("/")) throw new QvmError("INVALID_ARGUMENT", `the disk image must be an absolute path, not ${JSON.stringify(r.path)}`);
      if (r.kind !== "disk" && (r.path || r.readOnly)) throw new QvmError("INVALID_ARGUMENT", `a ${r.kind} has no image: plug it without one (\`qvm usb plug ${r.domain} --${r.kind}\`)`);
      const plugs = fake.usbPlugs.get(r.domain) ?? [];
      if (plugs.length >= MAX_USB_PLUGS) throw new QvmError("RESOURCE_EXHAUSTED", `${r.domain} already has ${MAX_USB_PLUGS} USB devices, the most a domain may have: unplug one first`);
      let n = 1;
      while (plugs.some((p) => p.id === `usb${n}`)) n++;
      const plug = { id: `usb${n}`, kind: r.kind, path: r.path, readOnly: r.readOnly, live: d.state === "Running" };
      fake.usbPlugs.set(r.domain, [...plugs, plug]);
      return { plug };
    }),
    unplugUsbDevice: unary("unplugUsbDevice", (r: adminV1.UnplugUsbDeviceRequest) => {
      find(r.domain);
      const plugs = fake.usbPlugs.get(r.domain) ?? [];
      if (!plugs.some((p) => p.id === r.id)) throw new QvmError("NOT_FOUND", `${r.domain} has no USB device ${JSON.stringify(r.id)}; its USB devices: ${plugs.map((p) => p.id).join(", ")} (\`qvm usb plugs ${r.domain}\`)`);
      fake.usbPlugs.set(r.domain, plugs.filter((p) => p.id !== r.id));
      return {};
    }),
    listUsbPlugs: unary("listUsbPlugs", (r: adminV1.ListUsbPlugsRequest) => ({ plugs: fake.usbPlugs.get(find(r.domain).name) ?? [] })),
    startDomain: unary("startDomain", (r: adminV1.StartDomainRequest) => {
      const d = find(r.name);
      if (d.state !== "Halted") throw new QvmError("FAILED_PRECONDITION", `domain "${r.name}" is already running`);
      d.state = "Running";
      return { domain: domainMsg(d) };
    }),
    shutdownDomain: unary("shutdownDomain", (r: adminV1.ShutdownDomainRequest) => {
      find(r.name).state = "Halted";
      return { reason: "" };
    }),
    killDomain: unary("killDomain", (r: adminV1.KillDomainRequest) => {
      find(r.name).state = "Halted";
      return {};
    }),
    pauseDomain: unary("pauseDomain", (r: adminV1.PauseDomainRequest) => {
      find(r.name).state = "Paused";
      return {};
    }),
    unpauseDomain: unary("unpauseDomain", (r: adminV1.UnpauseDomainRequest) => {
      find(r.name).state = "Running";
      return {};
    }),
    // Windows and the global clipboard, with qvmd's rules in small: known windows only, a
    // 64000-byte bound that empties it, a denied paste with Qubes' message, a wipe after a paste.
    listWindows: unary("listWindows", (r: adminV1.ListWindowsRequest) => {
      if (r.domain) find(r.domain);
      return { windows: fake.windows.filter((w) => !r.domain || w.domain === r.domain) };
    }),
    getClipboard: unary("getClipboard", () => clipboardState(fake)),
    clipboardCopy: unary("clipboardCopy", (r: adminV1.ClipboardCopyRequest) => {
      const id = r.from?.$case === "windowId" ? r.from.value : 0;
      const text = knownWindow(r.domain, id);
      if (Buffer.byteLength(text) > MAX_CLIPBOARD_BYTES) {
        fake.clipboard = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };
        throw new QvmError("RESOURCE_EXHAUSTED", `the selection in ${r.domain}'s window ${id} is larger than the global clipboard's ${MAX_CLIPBOARD_BYTES} bytes: the clipboard was emptied; copy less`);
      }
      fake.clipboard = { data: Buffer.from(text), source: r.domain, copiedAtMs: 1_790_000_000_000 };
      return clipboardState(fake);
    }),
    clipboardPaste: unary("clipboardPaste", (r: adminV1.ClipboardPasteRequest) => {
      const id = r.into?.$case === "windowId" ? r.into.value : 0;
      knownWindow(r.domain, id);
      const { data, source } = fake.clipboard;
      if (!data.length) throw new QvmError("FAILED_PRECONDITION", "the global clipboard is empty: copy with Ctrl-Shift-C first");
      if (fake.deniedPastes.has(`${source}>${r.domain}`)) throw new QvmError("PERMISSION_DENIED", pasteDeniedMessage(source, r.domain));
      fake.selections.set(`${r.domain}:${id}`, data.toString());
      fake.clipboard = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };
      return { data: Buffer.alloc(0), source };
    }),
    setClipboard: unary("setClipboard", (r: adminV1.SetClipboardRequest) => {
      if (!r.data.length) throw new QvmError("INVALID_ARGUMENT", "no text to put on the global clipboard");
      if (r.data.length > MAX_CLIPBOARD_BYTES) {
        fake.clipboard = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };
        throw new QvmError("RESOURCE_EXHAUSTED", `the text given (${r.data.length} bytes) is larger than the global clipboard's ${MAX_CLIPBOARD_BYTES} bytes: the clipboard was emptied; copy less`);
      }
      fake.clipboard = { data: Buffer.from(r.data), source: "dom0", copiedAtMs: 1_790_000_000_000 };
      return clipboardState(fake);
    }),
    takeClipboard: unary("takeClipboard", () => {
      const { data, source } = fake.clipboard;
      if (!data.length) throw new QvmError("FAILED_PRECONDITION", "the global clipboard is empty: copy with Ctrl-Shift-C first");
      fake.clipboard = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };
      return { data, source };
    }),
    exec: (call) => serveExec(fake, call),
    // A console that greets, then echoes every input; "q" makes "qvmd" close it.
    console: (call) => {
      call.on("data", (req: adminV1.ConsoleRequest) => {
        const m = req.msg;
        if (m?.$case === "start") {
          fake.calls.push(["console", m.value]);
          if (!fake.domains.some((d) => d.name === m.value.domain)) return void call.emit("error", toGrpcError(notFound(m.value.domain)));
          call.write({ output: Buffer.from("login: ") });
        } else if (m?.$case === "input") {
          call.write({ output: m.value });
          if (m.value.includes("q")) call.end();
        }
      });
      call.on("end", () => call.end());
    },
  };
  server.addService(adminV1.QvmAdminService, impl as UntypedServiceImplementation);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  return fake;
}
