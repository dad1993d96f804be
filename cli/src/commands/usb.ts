import { Args, Flags } from "@oclif/core";
import path from "node:path";
import type { adminV1 } from "@qvm/protocol";
import { QvmError, escapeGuestText, isDomainNameShaped, parseUsbDeviceName, usbDeviceName, type UsbPlugKind } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { formatTable } from "../lib/table.js";

type Action = "list" | "attach" | "detach" | "plug" | "plugs" | "unplug";
/** Qubes' qvm-device words (list/ls/l, attach/at/a, detach/dt/d), R4.3's assign/unassign, and the emulated devices' plug/plugs/unplug. */
const ACTIONS: Record<string, { action: Action; assign?: true }> = {
  list: { action: "list" },
  ls: { action: "list" },
  l: { action: "list" },
  attach: { action: "attach" },
  at: { action: "attach" },
  a: { action: "attach" },
  assign: { action: "attach", assign: true },
  detach: { action: "detach" },
  dt: { action: "detach" },
  d: { action: "detach" },
  unassign: { action: "detach" },
  plug: { action: "plug" },
  plugs: { action: "plugs" },
  unplug: { action: "unplug" },
};
const WORDS = "list, attach, detach, plug, plugs or unplug";

/** The DESCRIPTION column's width: longer descriptions are clipped, ending in "…". */
export const DESCRIPTION_WIDTH = 48;

/**
 * Device text (the device's own strings, as a backend reported them) for a terminal: every
 * character a terminal could act on written as \uXXXX (qvmd escapes them already; this is the
 * CLI's own guard), clipped to `width` characters, ending in "…", never inside an escape.
 */
export function deviceText(text: string, width = DESCRIPTION_WIDTH): string {
  const pieces = [...text].map(escapeGuestText);
  const whole = pieces.join("");
  if (whole.length <= width) return whole;
  let out = "";
  for (const p of pieces) {
    if (out.length + p.length > width - 1) break;
    out += p;
  }
  return `${out}…`;
}

/** JSON as printJson prints it, with every character a terminal could act on escaped: the same value, parsed. */
export function safeJson(value: unknown): string {
  // JSON.stringify escapes C0 controls inside strings, so the only raw ones left are its own newlines.
  return `${JSON.stringify(value, null, 2)
    .split("\n")
    .map((line) => escapeGuestText(line))
    .join("\n")}\n`;
}

export const USB_HEADER = ["BACKEND:BUSID", "VID:PID", "DESCRIPTION", "USED BY"] as const;

/**
 * The `qvm usb` table, as Qubes' qvm-device lists: one row per device; USED BY is the domain it
 * is attached to ("-": free), "(persistent)" when it is assigned; an assignment whose backend or
 * device is not there now says "(not present)".
 */
export function formatUsbTable(devices: readonly adminV1.UsbDevice[]): string {
  const rows = devices.map((d) => {
    const id = d.vendorId || d.productId ? `${deviceText(d.vendorId, 4)}:${deviceText(d.productId, 4)}` : "-";
    const description = d.present ? d.description || "-" : `(not present)${d.description ? ` ${d.description}` : ""}`;
    const usedBy = d.attachedTo ? `${d.attachedTo}${d.persistent ? " (persistent)" : ""}` : "-";
    return [deviceText(usbDeviceName(d.backend, d.busid), 64), id, deviceText(description), deviceText(usedBy, 64)];
  });
  return formatTable([[...USB_HEADER], ...rows]);
}

/** A disk plug's image, escaped (it is the admin's own path, but it comes back from qvmd): "/srv/stick.img (read-only)". */
function imageText(p: adminV1.UsbPlug): string {
  return `${escapeGuestText(p.path)}${p.readOnly ? " (read-only)" : ""}`;
}

/** The `qvm usb plugs VM` table: ID, KIND, STATE (live: the domain has it now; next start), IMAGE. */
export function formatPlugTable(plugs: readonly adminV1.UsbPlug[]): string {
  return formatTable([
    ["ID", "KIND", "STATE", "IMAGE"],
    ...plugs.map((p) => [deviceText(p.id, 16), deviceText(p.kind, 16), p.live ? "live" : "next start", p.kind === "disk" ? imageText(p) : "-"]),
  ]);
}

/** BACKEND:BUSID as `qvm usb list` shows it, refused (INVALID_ARGUMENT, naming the form) before anything is sent. */
export function parseDevice(text: string): { backend: string; busid: string } {
  const device = parseUsbDeviceName(text);
  if (!isDomainNameShaped(device.backend)) {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
    throw new QvmError("INVALID_ARGUMENT", `${shown} is not a USB device: its backend is not a domain name; name it as \`qvm usb\` lists it, BACKEND:BUSID (sys-usb:2-1)`);
  }
  return device;
}

export default class Usb extends QvmCommand {
  static override summary = "List USB devices of service domains (sys-usb); attach one to a domain; plug emulated ones.";
  static override description = `Like qvm-usb (qvm-device usb, which \`qvm device usb\` also is): a USB controller is passed to a service domain such as sys-usb (\`qvm pci attach --persistent sys-usb ...\`), so the host never talks to USB devices, and a device of that domain (its backend) is attached to another domain over USB/IP carried by qrexec (qubes.USB) (docs/usb.md).

  qvm usb [list [BACKEND]] [--json]     the devices, and who uses each
  qvm usb attach [-p] VM BACKEND:BUSID  to running VM; -p: at its starts too
  qvm usb detach VM BACKEND:BUSID       detach it; drops an assignment too
  qvm usb plug VM --disk IMAGE [--read-only] | --keyboard | --tablet
                                        an emulated device for VM (a backend)
  qvm usb plugs VM [--json]             VM's emulated devices
  qvm usb unplug VM ID                  remove one (ID from plugs: usb1)

A device is named BACKEND:BUSID, as Qubes names it: the backend domain and the device's sysfs bus id (sys-usb:2-1, sys-usb:1-1.4). The list shows BACKEND:BUSID, VID:PID, DESCRIPTION and USED BY ("-" when free; "(persistent)" when it is attached again at the domain's next start); a persistent assignment whose backend or device is not there now shows "(not present)". Descriptions are what the device says of itself: untrusted text, shown with control characters escaped and clipped to ${DESCRIPTION_WIDTH} characters.

attach needs VM running; qvmd refuses a device attached elsewhere (detach it there first), the backend itself, and a keyboard or mouse the qubes.InputKeyboard/InputMouse/InputTablet policy denies. assign is attach --persistent; unassign is detach.

plug gives a domain emulated devices on an emulated USB controller: a mass-storage stick from a disk image (a relative IMAGE is taken from the current directory; --read-only write-protects it), a keyboard or a tablet. They are stored with the domain: a running domain started with the controller gets one at once, otherwise at its next start; plug says which. The domain is then a backend like sys-usb, and its devices show in \`qvm usb\`.`;
  static override usage = [
    "[list [BACKEND]] [--json]",
    "attach [--persistent] VM BACKEND:BUSID",
    "detach VM BACKEND:BUSID",
    "plug VM --disk IMAGE [--read-only] | --keyboard | --tablet",
    "plugs VM [--json]",
    "unplug VM ID",
  ];
  static override examples = [
    example("", "Every USB device of every running backend, and who uses it."),
    example("list sys-usb --json", "sys-usb's devices, as JSON."),
    example("attach work sys-usb:2-1", "The stick on port 2-1 of sys-usb, in work now."),
    example("attach --persistent work sys-usb:2-1", "The same, and again whenever work starts."),
    example("detach work sys-usb:2-1", "Back to sys-usb; the assignment is dropped too."),
    example("plug sys-usb --disk stick.img --read-only", "A write-protected stick from ./stick.img, in sys-usb."),
    example("plug sys-usb --keyboard", "An emulated keyboard in sys-usb."),
    example("plugs sys-usb", "sys-usb's emulated devices and whether it has them now."),
    example("unplug sys-usb usb1", "Remove one."),
  ];
  static override aliases = ["device:usb"];
  static override strict = false;
  static override args = {
    action: Args.string({ description: `list (default), attach, detach, plug, plugs or unplug (also Qubes' ls, at, dt, assign, unassign).`, required: false }),
    vm: Args.string({ description: "list: the backend (default: all); the others: the domain.", required: false }),
    device: Args.string({ description: "attach, detach: BACKEND:BUSID as `qvm usb list` shows it (sys-usb:2-1); unplug: the plug's ID (usb1).", required: false }),
  };
  static override flags = {
    persistent: Flags.boolean({ char: "p", description: "attach: also attach it at the domain's every next start (assign it)." }),
    json: Flags.boolean({ description: "list, plugs: print them as JSON (the admin API's UsbDevice or UsbPlug objects)." }),
    disk: Flags.string({ description: "plug: a USB stick backed by this disk image (raw), relative to the current directory.", helpValue: "IMAGE" }),
    "read-only": Flags.boolean({ description: "plug --disk: the stick is write-protected." }),
    keyboard: Flags.boolean({ description: "plug: an emulated USB keyboard." }),
    tablet: Flags.boolean({ description: "plug: an emulated USB tablet (absolute pointer)." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Usb);
    const [word = "list", vm, ...rest] = argv as string[];
    const known = ACTIONS[word];
    if (!known) throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(word)}: use ${WORDS} (qvm usb ACTION ...)`);
    const { action } = known;
    const misplaced = (
      [
        ["--persistent", flags.persistent, ["attach"]],
        ["--json", flags.json, ["list", "plugs"]],
        ["--disk", flags.disk !== undefined, ["plug"]],
        ["--keyboard", flags.keyboard, ["plug"]],
        ["--tablet", flags.tablet, ["plug"]],
        ["--read-only", flags["read-only"], ["plug"]],
      ] as const
    ).find(([, given, only]) => given && !(only as readonly string[]).includes(action));
    if (misplaced) throw new QvmError("INVALID_ARGUMENT", `${misplaced[0]} goes with ${misplaced[2].join(" or ")}, not ${word}`);

    switch (action) {
      case "list": {
        if (rest.length) throw new QvmError("INVALID_ARGUMENT", `list takes at most one backend (got ${argv.slice(1).join(" ")})`);
        if (vm?.includes(":")) throw new QvmError("INVALID_ARGUMENT", `list takes a backend domain (sys-usb), not a device (${JSON.stringify(vm)})`);
        const { devices } = await (await this.admin()).listUsbDevices({ backend: vm ?? "" });
        if (flags.json) this.print(safeJson(devices));
        else this.print(formatUsbTable(devices));
        if (!devices.length && !flags.json) this.note(vm ? `${vm} reports no USB devices (is it running?)` : "no running domain reports USB devices: start the one with the USB controller (qvm start sys-usb)");
        return;
      }
      case "attach":
      case "detach": {
        const usage = word === "attach" ? "attach [--persistent] VM BACKEND:BUSID" : `${word} VM BACKEND:BUSID`;
        if (!vm || rest.length !== 1) throw new QvmError("INVALID_ARGUMENT", `${word} needs a domain and one device: qvm usb ${usage} (the devices: qvm usb list)`);
        const { backend, busid } = parseDevice(rest[0]!);
        const admin = await this.admin();
        if (action === "attach") await admin.attachUsbDevice({ domain: vm, backend, busid, persistent: flags.persistent || known.assign === true });
        else await admin.detachUsbDevice({ domain: vm, backend, busid });
        return;
      }
      case "plug": {
        const kinds = (
          [
            ["disk", flags.disk !== undefined],
            ["keyboard", flags.keyboard],
            ["tablet", flags.tablet],
          ] as const
        )
          .filter(([, given]) => given)
          .map(([kind]) => kind as UsbPlugKind);
        const form = "qvm usb plug VM --disk IMAGE [--read-only] | --keyboard | --tablet";
        if (!vm) throw new QvmError("INVALID_ARGUMENT", `plug needs a domain and a device: ${form}`);
        if (rest.length) throw new QvmError("INVALID_ARGUMENT", `plug takes one domain (got ${JSON.stringify(rest.join(" "))}); the image goes with --disk IMAGE`);
        if (kinds.length !== 1) throw new QvmError("INVALID_ARGUMENT", kinds.length ? `plug one device at a time (got --${kinds.join(" and --")})` : `plug needs a device: ${form} (to list ${vm}'s: qvm usb plugs ${vm})`);
        const kind = kinds[0]!;
        if (flags["read-only"] && kind !== "disk") throw new QvmError("INVALID_ARGUMENT", `--read-only goes with --disk, not --${kind}`);
        if (kind === "disk" && !flags.disk) throw new QvmError("INVALID_ARGUMENT", "--disk needs a disk image: --disk IMAGE");
        // qvmd opens the image itself: it needs the path from /, not from this shell's directory.
        const image = kind === "disk" ? path.resolve(flags.disk!) : "";
        const { plug } = await (await this.admin()).plugUsbDevice({ domain: vm, kind, path: image, readOnly: flags["read-only"] });
        if (!plug) throw new QvmError("INTERNAL", "qvmd sent no plug");
        const when = plug.live ? `${vm} has it now` : `it arrives at ${vm}'s next start`;
        const what = plug.kind === "disk" ? `disk ${imageText(plug)}` : deviceText(plug.kind, 16);
        this.print(`${deviceText(plug.id, 16)} of ${vm}: ${what}; ${when}\n`);
        return;
      }
      case "plugs": {
        if (!vm || rest.length) throw new QvmError("INVALID_ARGUMENT", `plugs takes one domain: qvm usb plugs VM [--json]`);
        const { plugs } = await (await this.admin()).listUsbPlugs({ domain: vm });
        if (flags.json) this.print(safeJson(plugs));
        else this.print(formatPlugTable(plugs));
        return;
      }
      case "unplug": {
        if (!vm || rest.length !== 1) throw new QvmError("INVALID_ARGUMENT", `unplug needs a domain and one plug ID: qvm usb unplug VM ID (the IDs: qvm usb plugs VM)`);
        await (await this.admin()).unplugUsbDevice({ domain: vm, id: rest[0]! });
        return;
      }
    }
  }
}
