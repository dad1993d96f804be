import { spawn } from "node:child_process";
import { Args, Flags } from "@oclif/core";
import { QvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { SilentExit } from "../lib/errors.js";
import { formatSize } from "../lib/sizes.js";
import { formatTable } from "../lib/table.js";

/** The image builder of this checkout (images/dist/qvm-images.js), next to this CLI bundle. */
function imagesBundle(): string {
  return decodeURIComponent(new URL("../../images/dist/qvm-images.js", import.meta.url).pathname);
}

export default class Template extends QvmCommand {
  static override summary = "Build, list or remove templates.";
  static override description = `Like qvm-template, for templates built on this machine:

  qvm template build NAME      build the template image NAME (images/: Debian packages, the guest
                               agent) and register it as a TemplateVM; needs root (mmdebstrap)
  qvm template list [--json]   the TemplateVMs with their root size and usage
  qvm template remove NAME     remove a TemplateVM; refused while a domain uses it

A build is cached by its inputs: building again is quick when nothing changed. An AppVM sees
changes made inside its template (\`qvm run TEMPLATE -- ...\`) at its next start.`;
  static override usage = ["build NAME", "list [--json]", "remove NAME"];
  static override examples = [example("build debian-12"), example("list"), example("remove my-template")];
  static override args = {
    action: Args.string({ description: "build, list or remove.", required: true }),
    name: Args.string({ description: "The template.", required: false }),
  };
  static override flags = {
    json: Flags.boolean({ description: "list: print JSON." }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Template);
    const admin = await this.admin();
    switch (args.action) {
      case "build": {
        if (!args.name) throw new QvmError("INVALID_ARGUMENT", "build needs the template's name, e.g. debian-12");
        const { imagesDir } = await admin.getDaemonInfo({});
        // The builder prints its own progress on stderr; the images land where qvmd reads them.
        const code = await new Promise<number>((resolve, reject) => {
          const child = spawn(process.execPath, [imagesBundle(), "build", "template", args.name!], {
            stdio: ["ignore", "inherit", "inherit"],
            env: { ...process.env, QVM_IMAGES_DIR: imagesDir },
          });
          child.once("error", reject);
          child.once("exit", (c, sig) => resolve(c ?? 128 + (sig ? 15 : 0)));
        });
        if (code !== 0) throw new SilentExit(code);
        const { registered } = await admin.importTemplates({});
        this.note(registered.includes(args.name) ? `TemplateVM ${args.name} is ready` : `template image ${args.name} is built (TemplateVM ${args.name} already existed and keeps its root)`);
        return;
      }
      case "list":
      case "ls": {
        const p = await loadProtocol();
        const templates = (await admin.listDomains({})).domains.map(p.domainInWords).filter((d) => d.class === "TemplateVM");
        const rows = [];
        for (const t of templates) {
          const root = (await admin.listVolumes({ domain: t.name })).volumes.find((v) => v.name === "root");
          rows.push({ name: t.name, state: t.state, sizeBytes: root?.sizeBytes ?? 0, usageBytes: root?.usageBytes ?? 0 });
        }
        if (flags.json) return this.printJson(rows);
        this.print(formatTable([["NAME", "STATE", "ROOT SIZE", "ROOT USAGE"], ...rows.map((r) => [r.name, r.state, formatSize(r.sizeBytes), formatSize(r.usageBytes)])]));
        return;
      }
      case "remove":
      case "rm": {
        if (!args.name) throw new QvmError("INVALID_ARGUMENT", "remove needs the template's name");
        const { domain } = await admin.getDomain({ name: args.name });
        const domainClass = domain && (await loadProtocol()).domainClassWord(domain.class);
        if (domainClass !== "TemplateVM") throw new QvmError("INVALID_ARGUMENT", `${args.name} is a ${domainClass}, not a TemplateVM: use \`qvm remove\``);
        await admin.removeDomain({ name: args.name });
        return;
      }
      default:
        throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(args.action)}: use build, list or remove`);
    }
  }
}
