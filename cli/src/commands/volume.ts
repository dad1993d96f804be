import { Args, Flags } from "@oclif/core";
import type { adminV1 } from "@qvm/protocol";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { askPassphrase, passphraseFromFile, processTerminal } from "../lib/passphrase.js";
import { formatSize, parseSize } from "../lib/sizes.js";
import { formatTable } from "../lib/table.js";
import { withPassphrase } from "../lib/unlock.js";

/** "VM:VOLUME" as Qubes' qvm-volume takes it. */
function splitVolume(text: string): { domain: string; volume: string } {
  const i = text.indexOf(":");
  if (i <= 0 || i === text.length - 1) throw new QvmError("INVALID_ARGUMENT", `name the volume as VM:VOLUME (like work:private), not ${JSON.stringify(text)}`);
  return { domain: text.slice(0, i), volume: text.slice(i + 1) };
}

function volumeRows(volumes: readonly adminV1.Volume[]): string {
  const flag = (b: boolean) => (b ? "yes" : "no");
  return formatTable([
    ["DOMAIN:VOLUME", "SIZE", "USAGE", "SNAP_ON_START", "SAVE_ON_STOP", "REVISIONS"],
    ...volumes.map((v) => [`${v.domain}:${v.name}`, formatSize(v.sizeBytes), formatSize(v.usageBytes), flag(v.snapOnStart), flag(v.saveOnStop), String(v.revisions.length)]),
  ]);
}

function orphanRows(orphans: readonly adminV1.OrphanVolumes[]): string {
  return formatTable([
    ["ORPHAN", "FOUND AS", "KEPT AT", "USAGE", "HOLDS"],
    ...orphans.map((o) => [o.id, o.name, o.keptAt || "-", formatSize(o.usageBytes), o.hasPrivate ? (o.hasRoot ? "root, private" : "private (an AppVM's)") : `no volumes: ${o.files.join(" ") || "empty"}`]),
  ]);
}

export default class Volume extends QvmCommand {
  static override summary = "List, inspect, revert or grow domain volumes; restore or purge volumes kept aside.";
  static override description = `Like qvm-volume. Every domain has a root, a private, a volatile and a kernel volume (docs/design.md):

  qvm volume list [VM...]             the volumes with their sizes, flags and revision counts
  qvm volume info VM:VOLUME           one volume in detail, with its revisions
  qvm volume revert VM:VOLUME [REV]   restore a revision (default: the newest); the domain must be halted
  qvm volume resize VM:VOLUME SIZE    grow private (4G, 512M, bytes), running or halted; the filesystem grows too
  qvm volume config VM:VOLUME revisions_to_keep N   how many revisions to keep (default 1, 0: none)
  qvm volume passphrase VM            a new passphrase for a halted encrypted domain
  qvm volume orphans [--json]         volumes qvmd found without a domain and kept aside
  qvm volume orphans restore ORPHAN [--as NAME] [--class CLASS] [--template T] [--label L]
                                      register them as a domain again, root and private as they are
  qvm volume orphans purge ORPHAN     delete them for good

A revision of the private volume is taken before every start; a template's or standalone's root
keeps its previous version at every stop. Volumes only grow.

An encrypted domain's (--prop encrypted=True) private volume, halted, is reverted or resized
through its passphrase: qvm asks "Passphrase for VM: " on the terminal without echo (up to 3
times), or reads the first line of --passphrase-file FILE. \`passphrase\` changes it: the current
one (asked, or --passphrase-file), then the new one twice (or --new-passphrase-file). Backups made
before keep the passphrase the domain had then.

qvmd never deletes a volume directory because its domain is missing from qvm.json (a store
restored from qvm.json.prev or a backup does not know domains made since): it moves it to
DATA/volumes/.orphans/NAME-TIME and logs it. What the store knew of the domain is gone, so a
restore decides again: volumes with their own root become a StandaloneVM (or --class
TemplateVM); an AppVM's private volume alone needs --template, since which template it ran on is
not recorded. The label defaults to red; properties are the defaults.`;
  static override usage = [
    "list [VM...] [--json]",
    "info VM:VOLUME [--json]",
    "revert VM:VOLUME [REVISION] [--passphrase-file FILE]",
    "resize VM:VOLUME SIZE [--passphrase-file FILE]",
    "config VM:VOLUME revisions_to_keep N",
    "passphrase VM [--passphrase-file FILE] [--new-passphrase-file FILE]",
    "orphans [--json]",
    "orphans restore ORPHAN [--as NAME] [--class CLASS] [--template TEMPLATE] [--label LABEL]",
    "orphans purge ORPHAN",
  ];
  static override examples = [
    example("list work"),
    example("info work:private"),
    example("revert work:private", "Undo everything since the last start."),
    example("resize work:private 4G"),
    example("orphans restore work-20261130T120000Z --template debian-12 --label blue", "An AppVM's private volume, kept aside, back as work."),
  ];
  static override strict = false;
  static override args = {
    action: Args.string({ description: "list, info, revert or resize.", required: true }),
    target: Args.string({ description: "VM (list) or VM:VOLUME.", required: false }),
    value: Args.string({ description: "REVISION (revert) or SIZE (resize).", required: false }),
  };
  static override flags = {
    json: Flags.boolean({ description: "Print the admin API's Volume (or OrphanVolumes) objects as JSON." }),
    as: Flags.string({ description: "orphans restore: the new domain's name (default: the name they were found under).", helpValue: "NAME" }),
    class: Flags.string({ description: "orphans restore: StandaloneVM or TemplateVM for volumes with a root (default StandaloneVM), AppVM for a private alone.", options: ["AppVM", "TemplateVM", "StandaloneVM"], helpValue: "CLASS" }),
    template: Flags.string({ description: "orphans restore: an AppVM's template (required for volumes without a root).", helpValue: "TEMPLATE" }),
    label: Flags.string({ description: "orphans restore: the label (default red).", helpValue: "LABEL" }),
    "passphrase-file": Flags.string({ description: "revert, resize, passphrase: an encrypted domain's (current) passphrase, from the first line of this file instead of asking.", helpValue: "FILE" }),
    "new-passphrase-file": Flags.string({ description: "passphrase: the new passphrase, from the first line of this file instead of asking twice.", helpValue: "FILE" }),
  };

  async run(): Promise<void> {
    const { args, argv, flags } = await this.parse(Volume);
    const rest = (argv as string[]).slice(1);
    const file = flags["passphrase-file"];
    if (file !== undefined && !["revert", "resize", "passphrase"].includes(args.action)) throw new QvmError("INVALID_ARGUMENT", "--passphrase-file is for revert, resize and passphrase");
    if (flags["new-passphrase-file"] !== undefined && args.action !== "passphrase") throw new QvmError("INVALID_ARGUMENT", "--new-passphrase-file is for passphrase");
    const unlock = { passphrase: file !== undefined ? passphraseFromFile(file) : undefined };
    const admin = await this.admin();
    switch (args.action) {
      case "list":
      case "ls": {
        const names = rest.length ? rest : (await admin.listDomains({})).domains.map((d) => d.name);
        const volumes: adminV1.Volume[] = [];
        for (const domain of names) volumes.push(...(await admin.listVolumes({ domain })).volumes);
        if (flags.json) this.printJson(volumes);
        else this.print(volumeRows(volumes));
        return;
      }
      case "info": {
        if (!args.target) throw new QvmError("INVALID_ARGUMENT", "info needs VM:VOLUME");
        const { domain, volume } = splitVolume(args.target);
        const v = (await admin.listVolumes({ domain })).volumes.find((x) => x.name === volume);
        if (!v) throw new QvmError("INVALID_ARGUMENT", `${domain} has no volume "${volume}" with data on the host (volumes: root, private)`);
        if (flags.json) return this.printJson(v);
        this.print(
          formatTable([
            ["domain", v.domain], ["volume", v.name], ["path", v.path], ["size", formatSize(v.sizeBytes)], ["usage", formatSize(v.usageBytes)],
            ["snap_on_start", String(v.snapOnStart)], ["save_on_stop", String(v.saveOnStop)], ["rw", String(v.rw)],
            ["revisions", v.revisions.join(" ") || "-"], ["revisions_to_keep", String(v.revisionsToKeep)],
          ]),
        );
        return;
      }
      case "revert": {
        if (!args.target) throw new QvmError("INVALID_ARGUMENT", "revert needs VM:VOLUME");
        const { domain, volume } = splitVolume(args.target);
        const { revision } = await withPassphrase(domain, (passphrase) => admin.revertVolume({ domain, volume, revision: args.value ?? "", passphrase }), unlock);
        this.note(`${domain}:${volume} reverted to ${revision}`);
        return;
      }
      case "resize": {
        if (!args.target || !args.value) throw new QvmError("INVALID_ARGUMENT", "resize needs VM:VOLUME SIZE");
        const { domain, volume } = splitVolume(args.target);
        const sizeBytes = parseSize(args.value);
        await withPassphrase(domain, (passphrase) => admin.resizeVolume({ domain, volume, sizeBytes, passphrase }), unlock);
        return;
      }
      case "passphrase": {
        const domain = args.target;
        if (!domain) throw new QvmError("INVALID_ARGUMENT", "passphrase needs VM");
        const term = processTerminal();
        const current = unlock.passphrase ?? (await askPassphrase(term, false, { prompt: `Current passphrase for ${domain}: `, notDone: "the passphrase was not changed" }));
        const next = flags["new-passphrase-file"] !== undefined ? passphraseFromFile(flags["new-passphrase-file"]) : await askPassphrase(term, true, { prompt: `New passphrase for ${domain}: `, notDone: "the passphrase was not changed" });
        await admin.changePassphrase({ domain, oldPassphrase: current, newPassphrase: next });
        this.note(`${domain}: passphrase changed (backups made before keep the old one)`);
        return;
      }
      case "config": {
        const [, property, value] = rest;
        if (!args.target || !property || value === undefined) throw new QvmError("INVALID_ARGUMENT", "config needs VM:VOLUME PROPERTY VALUE (revisions_to_keep N)");
        const { domain, volume } = splitVolume(args.target);
        await admin.configVolume({ domain, volume, property, value });
        return;
      }
      case "orphans": {
        const [, id] = rest;
        if (!args.target || args.target === "list" || args.target === "ls") {
          const { orphans } = await admin.listOrphanVolumes({});
          if (flags.json) this.printJson(orphans);
          else if (orphans.length) this.print(orphanRows(orphans));
          else this.note("no volumes are kept aside");
          return;
        }
        if (!id) throw new QvmError("INVALID_ARGUMENT", `orphans ${args.target} needs ORPHAN, as \`qvm volume orphans\` lists it`);
        if (args.target === "restore") {
          const p = await loadProtocol();
          const { domain } = await admin.restoreOrphanVolumes({
            id,
            name: flags.as ?? "",
            class: flags.class ? p.domainClassFromWord(flags.class) : p.adminV1.DomainClass.DOMAIN_CLASS_UNSPECIFIED,
            template: flags.template ?? "",
            label: flags.label ?? "",
          });
          if (domain) this.note(`${domain.name} restored from ${id} as a ${p.domainClassWord(domain.class)}; check its properties with \`qvm prefs ${domain.name}\``);
          return;
        }
        if (args.target === "purge") {
          const { purged } = await admin.purgeOrphanVolumes({ id });
          this.note(`deleted ${purged?.path ?? id}`);
          return;
        }
        throw new QvmError("INVALID_ARGUMENT", `unknown orphans action ${JSON.stringify(args.target)}: use list, restore or purge`);
      }
      default:
        throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(args.action)}: use list, info, revert, resize, passphrase, config or orphans`);
    }
  }
}
