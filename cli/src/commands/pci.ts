import { Args, Flags } from "@oclif/core";
import type { adminV1 } from "@qvm/protocol";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { formatTable } from "../lib/table.js";

type Action = "ls" | "attach" | "detach";
/** Qubes' qvm-device words (list/ls/l, attach/at/a, detach/dt/d) and R4.3's assign/unassign. */
const ACTIONS: Record<string, { action: Action; assign?: true }> = {
  ls: { action: "ls" },
  list: { action: "ls" },
  l: { action: "ls" },
  attach: { action: "attach" },
  at: { action: "attach" },
  a: { action: "attach" },
  assign: { action: "attach", assign: true },
  detach: { action: "detach" },
  dt: { action: "detach" },
  d: { action: "detach" },
  unassign: { action: "detach" },
};

const NO_IOMMU = "this host has no IOMMU enabled: no device can be passed through (turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on)";

const dash = (s: string) => s || "-";

/** The `qvm pci ls` table: one row per device, by BDF; an assignment of a device the host lacks says so. */
export function formatPciTable(devices: readonly adminV1.PciDevice[]): string {
  const rows = devices.map((d) => {
    if (!d.present) return [d.bdf, "-", "-", "-", "-", dash(d.assignedTo), "(not present on this host)"];
    const id = `${d.vendorId}:${d.deviceId}`;
    const description = [d.vendorName, d.deviceName].filter(Boolean).join(" ");
    return [d.bdf, d.className, id, dash(d.driver), d.iommuGroup < 0 ? "-" : String(d.iommuGroup), dash(d.assignedTo), dash(description)];
  });
  return formatTable([["BDF", "CLASS", "ID", "DRIVER", "GROUP", "USED BY", "DESCRIPTION"], ...rows]);
}

export default class Pci extends QvmCommand {
  static override summary = "List host PCI devices; assign one to a domain (passed through with VFIO).";
  static override description = `Like qvm-pci (qvm-device pci): give a domain a host PCI device, such as a NIC for sys-net or a USB controller for sys-usb. The domain's driver then talks to the device directly (VFIO).

  qvm pci [ls [VM]] [--json]          the host's devices, who has each
  qvm pci attach -p VM DEVICE...      assign to VM from its next start
  qvm pci assign VM DEVICE...         the same (Qubes 4.3's word)
  qvm pci detach VM DEVICE...         remove the assignment (or unassign)

DEVICE is the BDF as ls shows it (0000:00:19.0), or 00:19.0, or Qubes' name (dom0:00_19.0).

The microvm machine cannot hot-plug, so an assignment is all there is (Qubes' --persistent): it is stored with the domain and the device arrives at the domain's next start. An attach without --persistent is refused. A domain that runs keeps a detached device until it stops.

At the domain's start qvmd unbinds each device from its host driver and binds it to vfio-pci (the host loses it while the domain runs); when the domain stops, the device goes back to its host driver.

Passthrough needs an IOMMU, which confines the device's DMA to the domain's memory: without one (no groups in /sys/kernel/iommu_groups) qvmd refuses, since the device could read and write all of the host's memory. Turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on. The IOMMU isolates groups, not devices, so a device whose group (GROUP) holds other devices with host drivers is refused: assign the whole group together. qvmd must run as root, the vfio-pci module must be loaded, and the domain's kernel needs the device's driver and firmware. Not tested with a real device (the machines qvm is built on have no IOMMU).`;
  static override usage = ["[ls] [VM] [--json]", "attach --persistent VM DEVICE...", "assign VM DEVICE...", "detach VM DEVICE..."];
  static override examples = [
    example("", "Every host PCI device, its driver, IOMMU group and domain."),
    example("ls sys-net", "The devices assigned to sys-net."),
    example("attach --persistent sys-net 0000:00:19.0", "sys-net gets the NIC at its next start."),
    example("attach --persistent sys-net dom0:00_19.0", "The same, in Qubes' name."),
    example("attach --persistent sys-usb 00:14.0 00:14.2", "A USB controller and the rest of its IOMMU group."),
    example("detach sys-net 0000:00:19.0", "The host gets it back (when sys-net stops, if it runs)."),
  ];
  static override strict = false;
  static override args = {
    action: Args.string({ description: "ls (default), attach, assign, detach or unassign.", required: false }),
    vm: Args.string({ description: "The domain.", required: false }),
    device: Args.string({ description: "attach, detach: the device(s), as ls shows them (0000:00:19.0), as 00:19.0, or as Qubes names them (dom0:00_19.0).", required: false }),
  };
  static override flags = {
    persistent: Flags.boolean({ char: "p", description: "attach: assign for the domain's next start (the only attach there is: no hot-plug)." }),
    json: Flags.boolean({ description: "ls: print the devices as JSON." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Pci);
    const [word = "ls", vm, ...devices] = argv as string[];
    const known = ACTIONS[word];
    if (!known) throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(word)}: use ls, attach, detach, assign or unassign (qvm pci ACTION ...)`);
    const { action } = known;
    if (flags.persistent && action !== "attach") throw new QvmError("INVALID_ARGUMENT", `--persistent goes with attach, not ${word}`);
    if (flags.json && action !== "ls") throw new QvmError("INVALID_ARGUMENT", `--json goes with ls, not ${word}`);
    if (action === "ls") {
      if (devices.length) throw new QvmError("INVALID_ARGUMENT", `ls takes at most one domain (got ${argv.slice(1).join(" ")})`);
      const admin = await this.admin();
      const r = await admin.listPciDevices({ domain: vm ?? "" });
      if (flags.json) this.printJson(r.devices);
      else this.print(formatPciTable(r.devices));
      if (!r.iommu) this.note(NO_IOMMU);
      return;
    }
    if (!vm || !devices.length) throw new QvmError("INVALID_ARGUMENT", `${word} needs a domain and a device: qvm pci ${word === "assign" ? "assign" : word === "attach" ? "attach --persistent" : word} VM DEVICE...`);
    const admin = await this.admin();
    if (action === "attach") {
      const r = await admin.attachPciDevice({ domain: vm, devices, persistent: flags.persistent || known.assign === true });
      if (r.nextStart) this.note(`${vm} is running: ${r.devices.join(", ")} ${r.devices.length > 1 ? "arrive" : "arrives"} at its next start (microvm cannot hot-plug); restart it: qvm shutdown --wait ${vm} && qvm start ${vm}`);
    } else {
      const r = await admin.detachPciDevice({ domain: vm, devices });
      if (r.nextStart) this.note(`${vm} is running and keeps ${r.devices.join(", ")} until it stops; then the host gets ${r.devices.length > 1 ? "them" : "it"} back`);
    }
  }
}
