import { Args } from "@oclif/core";
import { QvmCommand, example } from "../base.js";

export default class Pause extends QvmCommand {
  static override summary = "Pause running domains (their vCPUs stop; memory is kept).";
  static override description = "Like qvm-pause. Resume with `qvm unpause`. Failures are reported one a line; qvm exits with the first one's code.";
  static override examples = [example("work")];
  static override strict = false;
  static override args = { vm: Args.string({ description: "Domains to pause.", required: true }) };

  async run(): Promise<void> {
    const { argv } = await this.parse(Pause);
    const admin = await this.admin();
    await this.forEachDomain(argv as string[], async (name) => {
      await admin.pauseDomain(name);
    });
  }
}
