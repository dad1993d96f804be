import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { SilentExit } from "../lib/errors.js";

const ACTIONS: Record<string, "list" | "add" | "del"> = { list: "list", ls: "list", add: "add", del: "del", remove: "del", rm: "del" };

export default class Tags extends QvmCommand {
  static override summary = "List, add or remove a domain's tags.";
  static override description = `Like qvm-tags.

  qvm tags VM [list]           print the domain's tags, one a line
  qvm tags VM list TAG...      print those set; exit 1 if any is not
  qvm tags VM add TAG...       add tags
  qvm tags VM del TAG...       remove tags (also: remove, rm)

Tags select domains in \`qvm ls --tags\` and in policies. --json prints the listing as a JSON array.`;
  static override usage = ["VM [list] [TAG...] [--json]", "VM add TAG...", "VM del TAG..."];
  static override examples = [example("work"), example("work add project-x"), example("work del project-x"), example("work list project-x", "Exit 0 if work has the tag.")];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "The domain.", required: true }),
    action: Args.string({ description: "list (default), add or del.", required: false }),
    tag: Args.string({ description: "Tags to check, add or remove.", required: false }),
  };
  static override flags = {
    json: Flags.boolean({ description: "Print the tags as a JSON array." }),
  };

  async run(): Promise<void> {
    const { args, argv, flags } = await this.parse(Tags);
    const actionWord = args.action ?? "list";
    const action = ACTIONS[actionWord];
    if (!action) throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(actionWord)}: use list, add or del`);
    const tags = (argv as string[]).slice(2);
    if (action !== "list" && tags.length === 0) throw new QvmError("INVALID_ARGUMENT", `${actionWord} needs at least one TAG`);
    const admin = await this.admin();
    if (action === "add") {
      for (const tag of tags) await admin.addTag({ domain: args.vm, tag });
      return;
    }
    if (action === "del") {
      for (const tag of tags) await admin.removeTag({ domain: args.vm, tag });
      return;
    }
    const current = (await admin.listTags({ domain: args.vm })).tags;
    const shown = tags.length ? tags.filter((t) => current.includes(t)) : [...current].sort();
    if (flags.json) this.printJson(shown);
    else this.print(shown.map((t) => `${t}\n`).join(""));
    if (shown.length < tags.length) throw new SilentExit(1);
  }
}
