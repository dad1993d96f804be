// Locating the host programs qvm runs, with errors that name the install step.
import { accessSync, constants } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";

export const INSTALL_HINT = "run `bash scripts/install-system-deps.sh` (or `npm run setup`) as root";

export function findExecutable(name: string, envPath = process.env.PATH ?? ""): string | undefined {
  for (const dir of [...envPath.split(":"), "/usr/sbin", "/sbin"]) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Resolves a host program, or throws MISSING_DEPENDENCY saying which package provides it. */
export function requireExecutable(name: string, debianPackage: string, override?: string): string {
  if (override) {
    try {
      accessSync(override, constants.X_OK);
      return override;
    } catch {
      throw new QvmError("MISSING_DEPENDENCY", `${override} (set for ${name}) is not an executable file`);
    }
  }
  const found = findExecutable(name);
  if (!found) {
    throw new QvmError("MISSING_DEPENDENCY", `${name} not found (Debian package ${debianPackage}): ${INSTALL_HINT}`);
  }
  return found;
}
