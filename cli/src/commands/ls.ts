import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { shouldColor } from "../lib/labels.js";
import { TCG_LEGEND, filterDomains, formatDomainTable } from "../lib/table.js";

export default class Ls extends QvmCommand {
  static override summary = "List domains with their state, class, label, template and netvm.";
  static override description = `Like qvm-ls: one line per domain, sorted by name, in aligned columns NAME STATE CLASS LABEL TEMPLATE NETVM. An empty template or netvm is shown as "-". On a terminal the name and label are printed in the label's color (24-bit ANSI); set NO_COLOR to turn that off. Output to a pipe or file is never colored.

States are Qubes' power states: Halted, Transient (starting), Running, Paused, Halting. A state marked "*" (Running*) is a domain running under TCG software emulation, which gives no hardware isolation (qvmd starts such domains only with --allow-tcg); a legend on stderr says so. The state filters, like --tags, match any of those given; different kinds of filter must all match.

With --json the matching domains are printed as a JSON array of the admin API's Domain objects (name, class, state, label, template, netvm, tags, createdAt, lastStopReason, vmmPid, accel: "kvm", "tcg" or "" when halted, isPreload: true for a preloaded disposable not yet handed out; class and state in the words above), never colored.`;
  static override examples = [
    example("", "List every domain."),
    example("--running", "Only running domains."),
    example("--halted --tags work --tags personal", "Halted domains tagged work or personal."),
    example("--class TemplateVM --json", "Templates, as JSON."),
  ];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "Only these domains (default: all).", required: false }),
  };
  static override flags = {
    running: Flags.boolean({ description: "Only running domains (state Running)." }),
    paused: Flags.boolean({ description: "Only paused domains." }),
    halted: Flags.boolean({ description: "Only halted domains." }),
    tags: Flags.string({ description: "Only domains with this tag; repeat for any of several.", multiple: true, multipleNonGreedy: true, helpValue: "TAG" }),
    class: Flags.string({ description: "Only domains of this class (AppVM, TemplateVM, StandaloneVM, DispVM).", helpValue: "CLASS" }),
    json: Flags.boolean({ description: "Print a JSON array of Domain objects instead of the table." }),
  };

  async run(): Promise<void> {
    const { flags, argv } = await this.parse(Ls);
    const states = [flags.running && "Running", flags.paused && "Paused", flags.halted && "Halted"].filter((s): s is string => Boolean(s));
    const admin = await this.admin();
    const p = await loadProtocol();
    const domains = (await admin.listDomains({})).domains.map(p.domainInWords);
    const missing = (argv as string[]).filter((n) => !domains.some((d) => d.name === n));
    if (missing.length) throw new QvmError("NOT_FOUND", `no such domain: ${missing.join(", ")}`);
    const shown = filterDomains(domains, { states, tags: flags.tags, class: flags.class, names: argv as string[] });
    if (flags.json) this.printJson(shown);
    else {
      this.print(formatDomainTable(shown, { color: shouldColor(process.stdout) }));
      // The legend goes to stderr, so the table on stdout stays one header and one row per domain.
      if (shown.some((d) => d.accel === "tcg")) process.stderr.write(`${TCG_LEGEND}\n`);
    }
  }
}
