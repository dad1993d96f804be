import { Args } from "@oclif/core";
import { QvmCommand, example } from "../base.js";

export default class Unpause extends QvmCommand {
  static override summary = "Resume paused domains.";
  static override description = "Like qvm-unpause. Failures are reported one a line; qvm exits with the first one's code.";
  static override examples = [example("work")];
  static override strict = false;
  static override args = { vm: Args.string({ description: "Domains to resume.", required: true }) };

  async run(): Promise<void> {
    const { argv } = await this.parse(Unpause);
    const admin = await this.admin();
    await this.forEachDomain(argv as string[], async (name) => {
      await admin.unpauseDomain(name);
    });
  }
}
