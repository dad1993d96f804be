import { Args, Flags } from "@oclif/core";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { passphraseFromFile } from "../lib/passphrase.js";
import { withPassphrase } from "../lib/unlock.js";

export default class Start extends QvmCommand {
  static override summary = "Start domains; returns once each one's agent answers.";
  static override description = `Like qvm-start. Domains are started one after the other. Starting a domain that is not halted is an error (exit 1) unless --skip-if-running is given. If one domain fails, the others are still started and qvm exits with the first failure's code.

An encrypted domain (created with --prop encrypted=True) needs its passphrase at each start: qvm asks "Passphrase for NAME: " on the terminal without echo, up to 3 times if it is wrong, or sends the first line of --passphrase-file FILE (one try). Without a terminal or file such a start fails (PASSPHRASE_REQUIRED).`;
  static override examples = [example("work"), example("--skip-if-running work personal"), example("vault --passphrase-file /root/vault.pass", "An encrypted domain, its passphrase from a file.")];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "Domains to start.", required: true }),
  };
  static override flags = {
    "skip-if-running": Flags.boolean({ description: "Do nothing for a domain that is not halted (running, starting, paused or halting)." }),
    "passphrase-file": Flags.string({ description: "Encrypted domains: read the passphrase from the first line of this file instead of asking.", helpValue: "FILE" }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Start);
    const passphrase = flags["passphrase-file"] ? passphraseFromFile(flags["passphrase-file"]) : undefined;
    const admin = await this.admin();
    const p = await loadProtocol();
    await this.forEachDomain(argv as string[], async (name) => {
      if (flags["skip-if-running"]) {
        const { domain } = await admin.getDomain({ name });
        if (domain && p.powerStateWord(domain.state) !== "Halted") return;
      }
      await withPassphrase(name, (pass) => admin.startDomain({ name, passphrase: pass }), { passphrase });
    });
  }
}
