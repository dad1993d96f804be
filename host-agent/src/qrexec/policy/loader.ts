// Reads the policy directory as Qubes does (Qubes' qrexec documentation): `*.policy`
// files in C-locale (byte) order, names of [0-9a-z_.-] only, dot files and other suffixes
// ignored, includes resolved relative to the including file. Any problem anywhere throws a
// QvmError naming the file and line, and the caller then refuses every call: a policy that is
// half read must not allow anything.
import { readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol/contracts";
import { parseLegacyPolicy, parsePolicy, type PolicyEntry, type PolicyRule } from "./parser.js";

export const POLICY_FILE_RE = /^[0-9a-z_.-]+$/;
/** Deeper nesting than this is taken for an include loop the realpath check missed. */
const MAX_INCLUDE_DEPTH = 16;
const MAX_POLICY_FILE_BYTES = 1024 * 1024;

function policyError(where: string, msg: string): QvmError {
  return new QvmError("POLICY_INVALID", `${where}: ${msg}`);
}

/** The `*.policy` files of a directory, in the order they are read. */
export function policyFilesIn(dir: string, where: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw policyError(where, `cannot read the policy directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const files = names.filter((n) => !n.startsWith(".") && n.endsWith(".policy"));
  for (const n of files) {
    if (!POLICY_FILE_RE.test(n)) throw policyError(path.join(dir, n), "policy file names may use only 0-9 a-z _ . - (rename the file)");
  }
  return files.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))).map((n) => path.join(dir, n));
}

function readPolicyFile(file: string, where: string): string {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    throw policyError(where, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!st.isFile()) throw policyError(where, `${file} is not a file`);
  if (st.size > MAX_POLICY_FILE_BYTES) throw policyError(where, `${file} is larger than ${MAX_POLICY_FILE_BYTES} bytes`);
  return readFileSync(file, "utf8");
}

/** Every rule of the policy in `dir`, includes expanded in place, in evaluation order. */
export function loadPolicy(dir: string): PolicyRule[] {
  const rules: PolicyRule[] = [];
  const stack: string[] = [];

  const visit = (file: string, where: string, parse: (text: string) => PolicyEntry[]) => {
    const real = (() => {
      try {
        return realpathSync(file);
      } catch {
        return file;
      }
    })();
    if (stack.includes(real)) throw policyError(where, `include loop: ${[...stack, real].join(" -> ")}`);
    if (stack.length >= MAX_INCLUDE_DEPTH) throw policyError(where, `includes nested deeper than ${MAX_INCLUDE_DEPTH}`);
    const text = readPolicyFile(file, where);
    stack.push(real);
    for (const e of parse(text)) {
      if (e.kind === "rule") {
        rules.push(e);
        continue;
      }
      const at = `${e.file}:${e.line}`;
      const target = path.resolve(path.dirname(e.file), e.path);
      if (e.kind === "include") visit(target, at, (t) => parsePolicy(t, target));
      else if (e.kind === "include-dir") for (const f of policyFilesIn(target, at)) visit(f, at, (t) => parsePolicy(t, f));
      else visit(target, at, (t) => parseLegacyPolicy(t, target, e.service!, e.argument ?? null));
    }
    stack.pop();
  };

  for (const f of policyFilesIn(dir, dir)) visit(f, f, (t) => parsePolicy(t, f));
  return rules;
}

/** Where qvmd keeps the policy: DATA/policy.d. */
export function policyDirOf(dataDir: string): string {
  return path.join(dataDir, "policy.d");
}
