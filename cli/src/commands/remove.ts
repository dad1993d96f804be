import { Args, Flags } from "@oclif/core";
import { QvmCommand, example } from "../base.js";
import { SilentExit } from "../lib/errors.js";
import { confirm } from "../lib/terminal.js";

export default class Remove extends QvmCommand {
  static override summary = "Remove domains and their volumes.";
  static override description = `Like qvm-remove. Refused for a running domain and for one that another domain uses as its template or netvm. When stdin is a terminal, asks for confirmation first unless --force is given; from a script (stdin not a terminal) it does not ask.`;
  static override examples = [example("old-work"), example("-f a b c", "Without asking.")];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "Domains to remove.", required: true }),
  };
  static override flags = {
    force: Flags.boolean({ char: "f", description: "Do not ask for confirmation." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Remove);
    const names = argv as string[];
    if (!flags.force && process.stdin.isTTY) {
      const what = names.length > 1 ? `domains ${names.join(", ")} and their data` : `domain ${names[0]} and its data`;
      if (!(await confirm(`Remove ${what}?`))) {
        this.note("nothing removed");
        throw new SilentExit(1);
      }
    }
    const admin = await this.admin();
    await this.forEachDomain(names, async (name) => {
      await admin.removeDomain({ name });
    });
  }
}
