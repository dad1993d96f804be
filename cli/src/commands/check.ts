import { Args, Flags } from "@oclif/core";
import { isQvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { SilentExit } from "../lib/errors.js";

export default class Check extends QvmCommand {
  static override summary = "Answer a question about a domain with the exit code.";
  static override description = `Like qvm-check: exit 0 when the answer is yes, 1 when it is no, and print the answer as a sentence unless -q.

  (no flag)     does the domain exist?
  --running     is it running? (any state but Halted, as in Qubes)
  --paused      is it paused?
  --template    is it a TemplateVM?

A domain that does not exist is a "no" (exit 1) for every question.`;
  static override examples = [example("work"), example("--running -q work || qvm start work")];
  static override args = { vm: Args.string({ description: "The domain.", required: true }) };
  static override flags = {
    running: Flags.boolean({ description: "Is it running (not halted)?", exclusive: ["paused", "template"] }),
    paused: Flags.boolean({ description: "Is it paused?", exclusive: ["running", "template"] }),
    template: Flags.boolean({ description: "Is it a TemplateVM?", exclusive: ["running", "paused"] }),
    quiet: Flags.boolean({ char: "q", description: "Print nothing; answer with the exit code only." }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Check);
    const admin = await this.admin();
    const p = await loadProtocol();
    const domain = await admin.getDomain({ name: args.vm }).then(
      (r) => r.domain,
      (err: unknown) => {
        if (isQvmError(err, "NOT_FOUND")) return undefined;
        throw err;
      },
    );
    const state = domain && p.powerStateWord(domain.state);
    let yes: boolean;
    let sentence: string;
    if (!domain) {
      yes = false;
      sentence = `${args.vm} does not exist`;
    } else if (flags.running) {
      yes = state !== "Halted";
      sentence = `${args.vm} is ${yes ? "" : "not "}running`;
    } else if (flags.paused) {
      yes = state === "Paused";
      sentence = `${args.vm} is ${yes ? "" : "not "}paused`;
    } else if (flags.template) {
      yes = p.domainClassWord(domain.class) === "TemplateVM";
      sentence = `${args.vm} is ${yes ? "" : "not "}a template`;
    } else {
      yes = true;
      sentence = `${args.vm} exists`;
    }
    if (!flags.quiet) this.print(`${sentence}\n`);
    if (!yes) throw new SilentExit(1);
  }
}
