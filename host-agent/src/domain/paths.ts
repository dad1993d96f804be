// Where a domain's files live while it runs (runtime directory: sockets, overlays, the runtime
// record) and after (log directory: serial console, VMM logs). Names are validated before they
// become paths.
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { validateDomainName } from "../model/names.js";

export class DomainPaths {
  constructor(
    readonly dataDir: string,
    readonly runtimeDir: string,
  ) {}

  runtimeDirOf(name: string): string {
    return path.join(this.runtimeDir, "domains", validateDomainName(name));
  }

  /**
   * What qvmd records of a running domain's windows (the program each shows): RUNTIME/windows/
   * NAME.json, beside the domain's runtime directory and not in it, since that one belongs to the
   * domain's VMM user, which must not be able to rename a frame.
   */
  windowsRecordOf(name: string): string {
    return path.join(this.runtimeDir, "windows", `${validateDomainName(name)}.json`);
  }

  logDirOf(name: string): string {
    return path.join(this.dataDir, "logs", validateDomainName(name));
  }

  /** Entries of the runtime directory: domains whose VMM may still run (names not yet validated). */
  runtimeEntries(): Array<{ name: string; dir: string }> {
    const dir = path.join(this.runtimeDir, "domains");
    if (!existsSync(dir)) return [];
    return readdirSync(dir).map((name) => ({ name, dir: path.join(dir, name) }));
  }
}
