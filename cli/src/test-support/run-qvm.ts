// The real ./qvm (the CLI bundle) as users run it, for tests against a real qvmd: built once per
// file, run without a terminal (stdin is /dev/null), giving the exit code and both outputs.
import { execFileSync, spawn } from "node:child_process";
import path from "node:path";

const repo = path.resolve(import.meta.dirname, "../../..");

export interface QvmResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Builds the CLI bundle ./qvm runs. */
export function buildCli(): void {
  execFileSync(process.execPath, ["scripts/build.mjs", "cli"], { cwd: repo, stdio: "ignore" });
}

/** ./qvm `args` against the qvmd of `runtimeDir`, in `cwd`. */
export function runQvm(args: string[], o: { runtimeDir: string; cwd: string }): Promise<QvmResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, QVM_RUNTIME_DIR: o.runtimeDir };
  delete env.NODE_ENV;
  const child = spawn(path.join(repo, "qvm"), args, { env, cwd: o.cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}
