import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { askPassphrase, passphraseFromFile, processTerminal } from "../lib/passphrase.js";
import { parseAssignments } from "../lib/run-args.js";

/** qvmd's words for a true bool property. */
const TRUE_WORDS = ["true", "1", "yes", "on"];

export default class Create extends QvmCommand {
  static override summary = "Create a new domain.";
  static override description = `Like qvm-create. An AppVM runs from its template's root image and keeps only its private volume; a TemplateVM and a StandaloneVM keep their own root (copied from --template, or empty). A DispVM is a named disposable: --template names an AppVM with template_for_dispvms, and every start begins from that AppVM's volumes again. Without --template the domain gets the global default_template (see \`qvm prefs --global\`). The label is required: it is the color the domain's windows and terminals are framed in (red, orange, yellow, green, gray, blue, purple, black).

Encryption (AppVMs, at creation only): with --prop encrypted=True the private volume is encrypted; the passphrase is asked at each start and cannot be recovered if lost. qvm asks the new passphrase twice on the terminal without echo, or reads the first line of --passphrase-file FILE.

Names: up to 31 characters, a letter first, then letters, digits, "_", "." or "-".`;
  static override examples = [
    example("work --label blue", "An AppVM on the default template."),
    example("-t debian-12 -l red untrusted --prop memory=800 --prop netvm=", "With properties set at creation."),
    example("--class TemplateVM -l black my-template"),
    example("-t debian-12 -l black vault --prop encrypted=True", "Its private volume encrypted (asks the passphrase twice; it cannot be recovered if lost)."),
  ];
  static override args = {
    name: Args.string({ description: "The new domain's name.", required: true }),
  };
  static override flags = {
    class: Flags.string({ char: "C", description: "The domain class.", options: ["AppVM", "TemplateVM", "StandaloneVM", "DispVM"], default: "AppVM" }),
    template: Flags.string({ char: "t", description: "The template (default: the global default_template).", helpValue: "TEMPLATE" }),
    label: Flags.string({ char: "l", description: "The label (color): red, orange, yellow, green, gray, blue, purple or black.", required: true, helpValue: "LABEL" }),
    prop: Flags.string({ description: "Set a property at creation; repeatable.", multiple: true, multipleNonGreedy: true, helpValue: "NAME=VALUE" }),
    "passphrase-file": Flags.string({ description: "With --prop encrypted=True: read the new passphrase from the first line of this file instead of asking.", helpValue: "FILE" }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Create);
    const properties = parseAssignments(flags.prop, "--prop");
    const encrypted = TRUE_WORDS.includes((properties.encrypted ?? "").toLowerCase());
    const file = flags["passphrase-file"];
    if (file !== undefined && !encrypted) throw new QvmError("INVALID_ARGUMENT", "--passphrase-file is for an encrypted domain: add --prop encrypted=True");
    // Connect first: no passphrase is asked for only to learn that qvmd is not there.
    const admin = encrypted ? await this.connected() : await this.admin();
    const passphrase = !encrypted
      ? undefined
      : file !== undefined
        ? passphraseFromFile(file)
        : await askPassphrase(processTerminal(), true, { prompt: `New passphrase for ${args.name}: `, notDone: `${args.name} was not created` });
    const p = await loadProtocol();
    await admin.createDomain({ name: args.name, class: p.domainClassFromWord(flags.class), template: flags.template ?? "", label: flags.label, properties, passphrase });
  }
}
