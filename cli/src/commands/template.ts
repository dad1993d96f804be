import { spawn } from "node:child_process";
import { Args, Flags } from "@oclif/core";
import { QvmError, isQvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { SilentExit } from "../lib/errors.js";
import { formatSize } from "../lib/sizes.js";
import { formatTable } from "../lib/table.js";

/**
 * The image store's code (template archives), loaded on first use like @qvm/protocol: most qvm
 * commands never need it.
 */
function loadImages(): Promise<typeof import("@qvm/images")> {
  return import("@qvm/images");
}

/** The image store is root's (qvmd's data directory): say so instead of a bare EACCES. */
async function asStoreOwner<T>(imagesDir: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM") {
      throw new QvmError("PERMISSION_DENIED", `${(err as Error).message}: the image store ${imagesDir} is root's: run as root`, { cause: err });
    }
    throw err;
  }
}

/** The image builder of this checkout (images/dist/qvm-images.js), next to this CLI bundle. */
function imagesBundle(): string {
  return decodeURIComponent(new URL("../../images/dist/qvm-images.js", import.meta.url).pathname);
}

export default class Template extends QvmCommand {
  static override summary = "Build, list, remove, export or import templates.";
  static override description = `Like qvm-template, for templates built on this machine or elsewhere:

  qvm template build NAME        build the template image NAME (images/: Debian packages, the guest agent) and register it as a TemplateVM; needs root (mmdebstrap)
  qvm template list [--json]     the TemplateVMs with their root size and usage
  qvm template remove NAME       remove a TemplateVM; refused while a domain uses it
  qvm template export NAME FILE  write the template image NAME to FILE, a template archive
  qvm template import FILE       check the template archive FILE strictly, add its image and register it as a TemplateVM (--name NEW: under another name; --replace: where that name has an image already)

A build is cached by its inputs: building again is quick when nothing changed. An AppVM sees changes made inside its template (\`qvm run TEMPLATE -- ...\`) at its next start.

A template archive (format qvm-template/1, see docs/cli.md) is an uncompressed tar of exactly qvm-template.json (name, suite, build time, the root's sizes and sha256) and root.img.zst (the raw root image, compressed with zstd): the form in which a template built elsewhere (e.g. by Nix) comes in. Export and import use qvmd's image store, which is root's: run them as root. Export takes the image as it is now, changes made in the TemplateVM included, and is refused while the TemplateVM runs.`;
  static override usage = ["build NAME", "list [--json]", "remove NAME", "export NAME FILE", "import FILE [--name NEW] [--replace]"];
  static override examples = [
    example("build debian-12"),
    example("list"),
    example("remove my-template"),
    example("export debian-12 debian-12.qvm-template.tar", "Write the template image debian-12 to a file."),
    example("import debian-12.qvm-template.tar --name debian-12-copy", "Add it on this (or another) host under another name."),
    example("import result/nixos.qvm-template.tar --replace", "Make a newer image of an existing template current (the old one is kept)."),
  ];
  static override args = {
    action: Args.string({ description: "build, list, remove, export or import.", required: true }),
    name: Args.string({ description: "The template (build, remove, export), or the archive (import).", required: false }),
    file: Args.string({ description: "export: the archive to write.", required: false }),
  };
  static override flags = {
    json: Flags.boolean({ description: "list: print JSON." }),
    name: Flags.string({ description: "import: register the image under this name instead of the archive's.", helpValue: "NEW" }),
    replace: Flags.boolean({ description: "import: import even if the name has an image already; the new one becomes current, the old one is kept." }),
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
      case "export": {
        if (!args.name || !args.file) throw new QvmError("INVALID_ARGUMENT", "export needs the template and the file, e.g. qvm template export debian-12 debian-12.qvm-template.tar");
        const { imagesDir } = await admin.getDaemonInfo({});
        // The TemplateVM's root is this image (qvmd links it): a running one would be copied mid-write.
        const domain = await admin.getDomain({ name: args.name }).then(
          (r) => r.domain,
          (err: unknown) => {
            if (isQvmError(err, "NOT_FOUND")) return undefined;
            throw err;
          },
        );
        const state = domain && (await loadProtocol()).powerStateWord(domain.state);
        if (state && state !== "Halted") throw new QvmError("FAILED_PRECONDITION", `${args.name} is ${state}: shut it down before exporting its image (\`qvm shutdown --wait ${args.name}\`)`);
        const images = await loadImages();
        const m = await asStoreOwner(imagesDir, () =>
          images.exportTemplateArchive(new images.ImageStore(imagesDir), args.name!, args.file!, { progress: images.terminalProgress(process.stderr, "qvm") }),
        );
        this.note(`exported template image ${m.name} to ${args.file} (${images.formatBytes(m.root.compressedBytes)}; root ${images.formatBytes(m.root.sizeBytes)})`);
        return;
      }
      case "import": {
        if (!args.name || args.file) throw new QvmError("INVALID_ARGUMENT", "import takes one archive, e.g. qvm template import debian-12.qvm-template.tar [--name NEW] [--replace]");
        const { imagesDir } = await admin.getDaemonInfo({});
        const images = await loadImages();
        const t = await asStoreOwner(imagesDir, () =>
          images.importTemplateArchive(new images.ImageStore(imagesDir), args.name!, {
            ...(flags.name === undefined ? {} : { name: flags.name }),
            replace: flags.replace,
            progress: images.terminalProgress(process.stderr, "qvm"),
          }),
        );
        const name = t.manifest.name;
        const { registered } = await admin.importTemplates({});
        this.note(registered.includes(name) ? `TemplateVM ${name} is ready` : `template image ${name} is imported (TemplateVM ${name} already existed and keeps its root)`);
        return;
      }
      default:
        throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(args.action)}: use build, list, remove, export or import`);
    }
  }
}
