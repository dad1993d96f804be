import { Args } from "@oclif/core";
import { QvmCommand, example } from "../base.js";

export default class Clone extends QvmCommand {
  static override summary = "Copy a domain, with its volumes and properties, under a new name.";
  static override description = "Like qvm-clone. The source must be halted.";
  static override examples = [example("debian-12 my-template")];
  static override args = {
    source: Args.string({ description: "The domain to copy.", required: true }),
    name: Args.string({ description: "The new domain's name.", required: true }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(Clone);
    await (await this.admin()).cloneDomain({ source: args.source, name: args.name });
  }
}
