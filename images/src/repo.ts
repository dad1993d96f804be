// Locates files of the qvm source tree, whether running from src/ (tests) or a dist/ bundle.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function repoRoot(): string {
  if (process.env.QVM_REPO_ROOT) return process.env.QVM_REPO_ROOT;
  if (cached) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "images/initramfs/init"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("cannot locate the qvm source tree; set QVM_REPO_ROOT");
    dir = parent;
  }
  cached = dir;
  return dir;
}

export const repoPath = (rel: string) => path.join(repoRoot(), rel);
