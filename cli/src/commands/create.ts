import { Args, Flags } from "@oclif/core";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { parseAssignments } from "../lib/run-args.js";

export default class Create extends QvmCommand {
  static override summary = "Create a new domain.";
  static override description = `Like qvm-create. An AppVM runs from its template's root image and keeps only its private volume; a TemplateVM and a StandaloneVM keep their own root (copied from --template, or empty). A DispVM is a named disposable: --template names an AppVM with template_for_dispvms, and every start begins from that AppVM's volumes again. Without --template the domain gets the global default_template (see \`qvm prefs --global\`). The label is required: it is the color the domain's windows and terminals are framed in (red, orange, yellow, green, gray, blue, purple, black).

Names: up to 31 characters, a letter first, then letters, digits, "_", "." or "-".`;
  static override examples = [
    example("work --label blue", "An AppVM on the default template."),
    example("-t debian-12 -l red untrusted --prop memory=800 --prop netvm=", "With properties set at creation."),
    example("--class TemplateVM -l black my-template"),
  ];
  static override args = {
    name: Args.string({ description: "The new domain's name.", required: true }),
  };
  static override flags = {
    class: Flags.string({ char: "C", description: "The domain class.", options: ["AppVM", "TemplateVM", "StandaloneVM", "DispVM"], default: "AppVM" }),
    template: Flags.string({ char: "t", description: "The template (default: the global default_template).", helpValue: "TEMPLATE" }),
    label: Flags.string({ char: "l", description: "The label (color): red, orange, yellow, green, gray, blue, purple or black.", required: true, helpValue: "LABEL" }),
    prop: Flags.string({ description: "Set a property at creation; repeatable.", multiple: true, multipleNonGreedy: true, helpValue: "NAME=VALUE" }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Create);
    const properties = parseAssignments(flags.prop, "--prop");
    const admin = await this.admin();
    const p = await loadProtocol();
    await admin.createDomain({ name: args.name, class: p.domainClassFromWord(flags.class), template: flags.template ?? "", label: flags.label, properties });
  }
}
