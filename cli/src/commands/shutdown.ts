import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";

export default class Shutdown extends QvmCommand {
  static override summary = "Shut domains down gracefully.";
  static override description = `Like qvm-shutdown. Asks each guest to power off. Without --wait, returns once the requests are sent; with --wait, returns when every domain has stopped. With --force, a domain whose guest has not powered off within its shutdown_timeout property is killed, and a domain that a running domain uses as its netvm is stopped anyway; without it such a guest keeps running and the command fails. Several domains are shut down at the same time; failures are reported one a line and qvm exits with the first one's code.`;
  static override usage = ["[--wait] [--force] VM...", "--all [--exclude VM]... [--wait] [--force]"];
  static override examples = [example("work"), example("--wait work personal"), example("--all --wait --force", "Stop everything.")];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "Domains to shut down.", required: false }),
  };
  static override flags = {
    wait: Flags.boolean({ description: "Wait until the domains have stopped." }),
    force: Flags.boolean({ description: "Kill a domain that does not power off within its shutdown_timeout; stop it even if a running domain uses it as netvm." }),
    all: Flags.boolean({ description: "Every domain that is not halted." }),
    exclude: Flags.string({ description: "With --all: leave this domain alone; repeatable.", multiple: true, multipleNonGreedy: true, helpValue: "VM", dependsOn: ["all"] }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Shutdown);
    let names = argv as string[];
    // oclif leaves an absent boolean flag undefined, hence Boolean().
    if (Boolean(flags.all) === names.length > 0) throw new QvmError("INVALID_ARGUMENT", "give domain names or --all (not both)");
    const admin = await this.admin();
    if (flags.all) {
      const p = await loadProtocol();
      const { domains } = await admin.listDomains({});
      names = domains.filter((d) => p.powerStateWord(d.state) !== "Halted" && !flags.exclude?.includes(d.name)).map((d) => d.name);
    }
    await this.forEachDomain(names, (name) => admin.shutdownDomain({ name, wait: Boolean(flags.wait), force: Boolean(flags.force) }), { parallel: true });
  }
}
