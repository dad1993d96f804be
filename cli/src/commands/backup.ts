import path from "node:path";
import { Args, Flags } from "@oclif/core";
import type { adminV1 } from "@qvm/protocol";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { BackupProgressBar } from "../lib/backup-progress.js";
import { askPassphrase, passphraseFromFile, processTerminal } from "../lib/passphrase.js";
import { formatSize } from "../lib/sizes.js";

export default class Backup extends QvmCommand {
  static override summary = "Back domains up into one encrypted file, check a backup, or restore from one.";
  static override description = `Like qvm-backup, qvm-backup-restore: one file (a "vault", docs/backup-format.md) holds the domains' records (class, properties, features, tags, firewall rules), the qrexec policy files of DATA/policy.d (but qvm's own 90-default.policy) and the domains' volumes, compressed and encrypted with a key made from a passphrase.

  qvm backup create FILE DOMAIN...     back the domains up into FILE (which must not exist)
  qvm backup verify FILE               read and check every byte of FILE; list what it holds
  qvm backup restore FILE [DOMAIN...]  verify all of FILE, then restore its domains (all, or those named) and policy files

Volumes: every domain's private volume; a TemplateVM's or StandaloneVM's root only with --include-root (it is large; an AppVM has no root of its own). A running domain is backed up from a consistent state, not its live disk: its private volume as of its last start (the revision taken then), and qvm says so. A template backed up without its root is left out of a restore of everything, and refused when named.

Incremental: --incremental-from OLD.vault stores only blocks that OLD (and the backups it is incremental on, given with --chain) does not have, with OLD's passphrase. Verifying or restoring an incremental backup needs every earlier file of its chain (--chain FILE, repeated).

Restore writes nothing unless the whole backup checks out (a damaged file, a wrong passphrase or a missing chain file: nothing changes). A domain whose name is taken is refused, or with --rename-conflicts restored as NAME-1 (references to it among the restored domains follow). An AppVM's template must be on this host or restored with it. A policy file that exists here with other content is kept; the backup's copy is written beside it as FILE.restored. An interrupted restore leaves no half domain; run it again.

The passphrase is asked on the terminal without echo (twice for create), or read from the first line of --passphrase-file FILE, never from the command line. qvmd (root) opens FILE, so a relative FILE is made absolute here.`;
  static override usage = [
    "create FILE DOMAIN... [--include-root] [--incremental-from OLD.vault [--chain FILE]...] [--passphrase-file F]",
    "verify FILE [--chain FILE]... [--passphrase-file F] [--json]",
    "restore FILE [DOMAIN...] [--rename-conflicts] [--chain FILE]... [--passphrase-file F] [--json]",
  ];
  static override examples = [
    example("create /mnt/usb/work.vault work personal", "Back up two domains (asks the passphrase twice)."),
    example("create --include-root /mnt/usb/all.vault debian-12 work", "The template's root too, for a host without it."),
    example("create --incremental-from /mnt/usb/work.vault /mnt/usb/work-2.vault work", "Only what changed since work.vault."),
    example("verify /mnt/usb/work-2.vault --chain /mnt/usb/work.vault"),
    example("restore /mnt/usb/work.vault --rename-conflicts", "Everything; a name that is taken becomes NAME-1."),
    example("restore /mnt/usb/all.vault work --passphrase-file /root/backup.pass", "Only work (its template must exist here)."),
  ];
  static override strict = false;
  static override args = {
    action: Args.string({ description: "create, verify or restore.", required: true }),
    file: Args.string({ description: "The backup file.", required: true }),
    domains: Args.string({ description: "create: the domains to back up; restore: those to restore (default: all).", required: false }),
  };
  static override flags = {
    "include-root": Flags.boolean({ description: "create: also the root volume of TemplateVMs and StandaloneVMs (large)." }),
    "incremental-from": Flags.string({ description: "create: an earlier backup to store only changes against (same passphrase).", helpValue: "OLD.vault" }),
    chain: Flags.string({ description: "The earlier backups of an incremental chain; repeatable.", multiple: true, multipleNonGreedy: true, helpValue: "FILE" }),
    "passphrase-file": Flags.string({ description: "Read the passphrase from the first line of this file instead of asking.", helpValue: "FILE" }),
    "rename-conflicts": Flags.boolean({ description: "restore: restore a domain whose name is taken as NAME-1 (NAME-2 ...) instead of refusing." }),
    json: Flags.boolean({ description: "Print the result as JSON (progress and notes still go to stderr)." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Backup);
    const [action, fileArg, ...domains] = argv as string[];
    if (action !== "create" && action !== "verify" && action !== "restore") {
      throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(action)}: use create, verify or restore (qvm backup --help)`);
    }
    const file = path.resolve(fileArg!);
    const chain = (flags.chain ?? []).map((f) => path.resolve(f));
    if (action === "create" && domains.length === 0) throw new QvmError("INVALID_ARGUMENT", "name the domains to back up, e.g. qvm backup create /mnt/usb/work.vault work");
    if (action === "verify" && domains.length > 0) throw new QvmError("INVALID_ARGUMENT", "verify takes one file; give earlier backups of its chain with --chain FILE");
    if (action !== "create" && (flags["incremental-from"] || flags["include-root"])) throw new QvmError("INVALID_ARGUMENT", "--incremental-from and --include-root are for create");
    if (action !== "restore" && flags["rename-conflicts"]) throw new QvmError("INVALID_ARGUMENT", "--rename-conflicts is for restore");
    if (action === "create" && chain.length > 0 && !flags["incremental-from"]) throw new QvmError("INVALID_ARGUMENT", "--chain with create names the backups --incremental-from OLD is itself incremental on: give --incremental-from too");

    // Connect first: no passphrase is asked for only to learn that qvmd is not there.
    const admin = await this.connected();
    const passphrase = flags["passphrase-file"] ? passphraseFromFile(flags["passphrase-file"]) : await askPassphrase(processTerminal(), action === "create" && !flags["incremental-from"]);
    const bar = new BackupProgressBar(process.stderr);
    const stream =
      action === "create"
        ? admin.createBackup({ file, domains, passphrase, includeRoot: flags["include-root"], incrementalFrom: flags["incremental-from"] ? path.resolve(flags["incremental-from"]) : "", chain })
        : action === "verify"
          ? admin.verifyBackup({ file, chain, passphrase })
          : admin.restoreBackup({ file, chain, passphrase, domains, renameConflicts: flags["rename-conflicts"] });
    const result = await new Promise<adminV1.BackupResult>((resolve, reject) => {
      let done: adminV1.BackupResult | undefined;
      stream.on("data", (m: adminV1.BackupProgress) => {
        if (m.result) done = m.result;
        else if (m.note) bar.say(`qvm: ${m.note}`);
        else if (m.phase) bar.update(m);
      });
      stream.on("error", (err) => reject(admin.errorOf(err)));
      stream.on("end", () => (done ? resolve(done) : reject(new QvmError("INTERNAL", "qvmd ended the backup call without a result"))));
    }).finally(() => bar.clear());
    await this.report(action, result, flags.json);
  }

  private async report(action: "create" | "verify" | "restore", r: adminV1.BackupResult, json: boolean): Promise<void> {
    const p = await loadProtocol();
    const domains = r.domains.map((d) => ({ name: d.name, class: p.domainClassWord(d.class), volumes: d.volumes, revision: d.revision, restoredFrom: d.restoredFrom }));
    if (json) {
      return this.printJson({ file: r.file, backupId: r.backupId, parentId: r.parentId, createdAt: r.createdAt, domains, policyFiles: r.policyFiles, policyKept: r.policyKept, notes: r.notes });
    }
    const list = (xs: string[]): string => xs.join(", ") || "none";
    if (action === "create") {
      this.print(`backed up ${list(domains.map((d) => d.name))} and policy files ${list(r.policyFiles)} to ${r.file}\n`);
      this.print(`backup ${r.backupId}${r.parentId ? ` (incremental on ${r.parentId})` : ""}: ${formatSize(r.bytesIn)} of data, ${formatSize(r.bytesWritten)} written\n`);
      return;
    }
    if (action === "verify") {
      this.print(`${r.file}: every chunk checked (${formatSize(r.bytesIn)}); backup ${r.backupId}${r.parentId ? `, incremental on ${r.parentId}` : ""}, made ${r.createdAt}\n`);
      for (const d of domains) this.print(`  ${d.name} (${d.class}): ${list(d.volumes)}${d.revision ? `, private as of revision ${d.revision} (it was running)` : ""}\n`);
      this.print(`  policy files: ${list(r.policyFiles)}\n`);
      return;
    }
    this.print(`restored from backup ${r.backupId} (made ${r.createdAt}): ${list(domains.map((d) => (d.restoredFrom ? `${d.restoredFrom} as ${d.name}` : d.name)))}\n`);
    this.print(`policy files written: ${list(r.policyFiles)}${r.policyKept.length ? `; kept as they are here: ${list(r.policyKept)}` : ""}\n`);
  }
}
