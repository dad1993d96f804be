import { Args } from "@oclif/core";
import { QvmCommand, example } from "../base.js";

export default class Kill extends QvmCommand {
  static override summary = "Stop domains at once, like pulling the plug.";
  static override description = "Like qvm-kill: the VMM is killed without asking the guest; unsaved data in the guest is lost. Failures are reported one a line; qvm exits with the first one's code.";
  static override examples = [example("work")];
  static override strict = false;
  static override args = { vm: Args.string({ description: "Domains to kill.", required: true }) };

  async run(): Promise<void> {
    const { argv } = await this.parse(Kill);
    const admin = await this.admin();
    await this.forEachDomain(argv as string[], async (name) => {
      await admin.killDomain(name);
    });
  }
}
