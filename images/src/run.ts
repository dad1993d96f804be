// Runs a build tool; a failure becomes IMAGE_BUILD_FAILED naming the command and its output.
import { execa, type Options } from "execa";
import { QvmError } from "@qvm/protocol";

export async function run(file: string, args: string[], opts: Options = {}): Promise<string> {
  try {
    const r = await execa(file, args, { ...opts, all: true, stripFinalNewline: true });
    return String(r.stdout ?? "");
  } catch (err) {
    const e = err as { all?: string; shortMessage?: string; code?: string };
    if (e.code === "ENOENT") {
      throw new QvmError("MISSING_DEPENDENCY", `${file} not found: run \`bash scripts/install-system-deps.sh\` as root`, { cause: err });
    }
    const out = String(e.all ?? "").trim().split("\n").slice(-15).join("\n");
    throw new QvmError("IMAGE_BUILD_FAILED", `${file} ${args.slice(0, 4).join(" ")}… failed: ${e.shortMessage ?? ""}\n${out}`, { cause: err });
  }
}
