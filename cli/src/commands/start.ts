import { Args, Flags } from "@oclif/core";
import { QvmCommand, example, loadProtocol } from "../base.js";

export default class Start extends QvmCommand {
  static override summary = "Start domains; returns once each one's agent answers.";
  static override description = `Like qvm-start. Domains are started one after the other. Starting a domain that is not halted is an error (exit 1) unless --skip-if-running is given. If one domain fails, the others are still started and qvm exits with the first failure's code.`;
  static override examples = [example("work"), example("--skip-if-running work personal")];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "Domains to start.", required: true }),
  };
  static override flags = {
    "skip-if-running": Flags.boolean({ description: "Do nothing for a domain that is not halted (running, starting, paused or halting)." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Start);
    const admin = await this.admin();
    const p = await loadProtocol();
    await this.forEachDomain(argv as string[], async (name) => {
      if (flags["skip-if-running"]) {
        const { domain } = await admin.getDomain({ name });
        if (domain && p.powerStateWord(domain.state) !== "Halted") return;
      }
      await admin.startDomain({ name });
    });
  }
}
