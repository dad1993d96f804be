import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { formatKeyValues } from "../lib/table.js";

export default class Features extends QvmCommand {
  static override summary = "List, get, set or unset a domain's features.";
  static override description = `Like qvm-features. Features are free-form NAME=VALUE strings that qvm and the guest read (e.g. gui, service.NAME).

  qvm features VM                  list them: NAME VALUE, sorted
  qvm features VM FEATURE          print the value (exit 1 if not set)
  qvm features VM FEATURE VALUE    set it
  qvm features -D VM FEATURE       unset it

--json prints the listing as a JSON object, or one feature's value as a JSON string.

preload-dispvm-max N on a template for disposables keeps N of its disposables booted and paused, so that \`qvm run --dispvm=TEMPLATE\` and qrexec @dispvm calls get one at once (Qubes 4.3's preloaded disposables; the global default for default_dispvm: \`qvm prefs --global preload_dispvm_max N\`). qvmd keeps preload-dispvm (the list of them) and each one's preload-dispvm-in-progress and preload-dispvm-completed; those cannot be set.`;
  static override usage = ["VM [FEATURE [VALUE]] [--json]", "-D VM FEATURE"];
  static override examples = [
    example("work"),
    example("work gui 1", "Set the gui feature."),
    example("-D work gui", "Unset it."),
    example("dvm preload-dispvm-max 1", "Keep one disposable of dvm booted and paused, ready for `qvm run --dispvm=dvm`."),
  ];
  static override args = {
    vm: Args.string({ description: "The domain.", required: true }),
    feature: Args.string({ description: "The feature name.", required: false }),
    value: Args.string({ description: "The new value.", required: false }),
  };
  static override flags = {
    unset: Flags.boolean({ char: "D", aliases: ["delete"], description: "Unset FEATURE." }),
    json: Flags.boolean({ description: "Print JSON." }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Features);
    if (flags.unset && (args.feature === undefined || args.value !== undefined)) throw new QvmError("INVALID_ARGUMENT", "-D takes a feature name and no value");
    const admin = await this.admin();
    if (args.feature === undefined) {
      const { features } = await admin.listFeatures({ domain: args.vm });
      if (flags.json) this.printJson(Object.fromEntries(Object.entries(features).sort(([a], [b]) => (a < b ? -1 : 1))));
      else this.print(formatKeyValues(features));
    } else if (flags.unset) {
      await admin.removeFeature({ domain: args.vm, name: args.feature });
    } else if (args.value === undefined) {
      const { features } = await admin.listFeatures({ domain: args.vm });
      const value = features[args.feature];
      if (value === undefined) throw new QvmError("NOT_FOUND", `${args.vm} has no feature ${args.feature}`);
      if (flags.json) this.printJson(value);
      else this.print(`${value}\n`);
    } else {
      await admin.setFeature({ domain: args.vm, name: args.feature, value: args.value });
    }
  }
}
