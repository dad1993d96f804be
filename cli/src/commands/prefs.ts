import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { formatPropertyTable } from "../lib/table.js";

export default class Prefs extends QvmCommand {
  static override summary = "List, get, set or reset a domain's properties (or the global ones).";
  static override description = `Like qvm-prefs (and qubes-prefs with --global).

  qvm prefs VM                 list every property: NAME, a marker column, VALUE
  qvm prefs VM PROP            print the property's value
  qvm prefs VM PROP VALUE      set it
  qvm prefs -D VM PROP         reset it (back to the template's or default value)

The marker column shows "D" when the value is not the domain's own (it comes from the template, the global properties or the built-in default) and "-" when it is. Values are text, in the form they are set in; an empty value (e.g. netvm "" for no network) is printed as nothing.

With --global the same forms work on the global properties (default_template, default_netvm, ...), without a VM: qvm prefs --global [PROP [VALUE]].

--json prints the admin API's Property objects (name, value, type, source, doc): an array when listing, one object for PROP.`;
  static override usage = ["VM [--json]", "VM PROP [VALUE] [--json]", "-D VM PROP", "--global [PROP [VALUE]] [-D] [--json]"];
  static override examples = [
    example("work", "All properties of work."),
    example("work memory", "Print work's memory (MiB)."),
    example("work memory 800", "Set it."),
    example("-D work memory", "Back to the template's or default value."),
    example('work netvm ""', "Take work offline."),
    example("--global default_template debian-12", "Set a global property."),
  ];
  static override args = {
    vm: Args.string({ description: "The domain (with --global: the property).", required: false }),
    prop: Args.string({ description: "The property (with --global: the value).", required: false }),
    value: Args.string({ description: "The new value.", required: false }),
  };
  static override flags = {
    global: Flags.boolean({ description: "Work on the global properties (qubes-prefs) instead of a domain's." }),
    default: Flags.boolean({ char: "D", description: "Reset PROP to its default (drop the domain's own value)." }),
    json: Flags.boolean({ description: "Print Property objects as JSON." }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Prefs);
    let positional = [args.vm, args.prop, args.value].filter((a): a is string => a !== undefined);
    let domain: string;
    if (flags.global) {
      domain = "";
      if (positional.length > 2) throw new QvmError("INVALID_ARGUMENT", "with --global give at most PROP and VALUE, without a VM");
    } else {
      if (positional.length === 0) throw new QvmError("INVALID_ARGUMENT", "missing VM name (or --global for the global properties)");
      domain = positional[0]!;
      positional = positional.slice(1);
    }
    const [prop, value] = positional;
    if (flags.default && (prop === undefined || value !== undefined)) throw new QvmError("INVALID_ARGUMENT", "-D takes a property name and no value");
    const admin = await this.admin();
    if (prop === undefined) {
      const { properties } = await admin.listProperties({ domain });
      const sorted = [...properties].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      if (flags.json) this.printJson(sorted);
      else this.print(formatPropertyTable(sorted));
    } else if (flags.default) {
      await admin.resetProperty({ domain, name: prop });
    } else if (value === undefined) {
      const { property } = await admin.getProperty({ domain, name: prop });
      if (flags.json) this.printJson(property);
      else this.print(`${property?.value ?? ""}\n`);
    } else {
      await admin.setProperty({ domain, name: prop, value });
    }
  }
}
