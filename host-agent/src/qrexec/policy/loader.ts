// Reads the policy directory as Qubes does (Qubes' qrexec documentation): `*.policy`
// files in C-locale (byte) order, names of [0-9a-z_.-] only, dot files and other suffixes
// ignored, includes resolved relative to the including file. Any problem anywhere throws a
// QvmError naming the file and line, and the caller then refuses every call: a policy that is
// half read must not allow anything.
//
// qvmd parses the policy once and keeps it (PolicyCache): each call costs one stat of every file
// and directory the last parse read, and the policy is parsed again only when one of them
// changed (name list, size, mtime, ctime, inode), an error included.
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

/**
 * What a parse read, each with its stamp taken just before it was read ("f PATH" or "d PATH"):
 * a change after the stamp shows at the next check, whether or not the parse saw it.
 */
export type PolicyDeps = Map<string, string>;

/** The `*.policy` files of a directory, in the order they are read. */
export function policyFilesIn(dir: string, where: string, deps?: PolicyDeps): string[] {
  deps?.set(`d ${dir}`, dirStamp(dir));
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
export function loadPolicy(dir: string, deps?: PolicyDeps): PolicyRule[] {
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
    deps?.set(`f ${file}`, fileStamp(file));
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
      else if (e.kind === "include-dir") for (const f of policyFilesIn(target, at, deps)) visit(f, at, (t) => parsePolicy(t, f));
      else visit(target, at, (t) => parseLegacyPolicy(t, target, e.service!, e.argument ?? null));
    }
    stack.pop();
  };

  for (const f of policyFilesIn(dir, dir, deps)) visit(f, f, (t) => parsePolicy(t, f));
  return rules;
}

/** One stat's worth of what identifies a file's content: inode, size, mtime and ctime (ns), or why it cannot be read. */
function fileStamp(p: string): string {
  try {
    const st = statSync(p, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.mode}`;
  } catch (err) {
    return `error:${(err as NodeJS.ErrnoException).code ?? "?"}`;
  }
}

/** A directory's stamp: its own stat and the names it holds (a rename keeps the directory's mtime on some filesystems). */
function dirStamp(p: string): string {
  try {
    return `${fileStamp(p)}[${readdirSync(p).sort().join("/")}]`;
  } catch (err) {
    return `error:${(err as NodeJS.ErrnoException).code ?? "?"}`;
  }
}

/** The stamp of a "f PATH" or "d PATH" key, now. */
function stampOf(key: string): string {
  return key.startsWith("d ") ? dirStamp(key.slice(2)) : fileStamp(key.slice(2));
}

/**
 * The policy in `dir`, parsed once and parsed again only when a file or directory the last parse
 * read has changed. A policy with an error stays an error (every call denied, naming file:line)
 * until one of those files changes.
 */
export class PolicyCache {
  private deps: PolicyDeps = new Map();
  private result: { rules: PolicyRule[] } | { error: unknown } | undefined;
  /** How many times the policy was parsed. */
  parses = 0;

  constructor(private readonly dir: string) {}

  /** The current rules; throws the policy's error (QvmError POLICY_INVALID, naming file:line). */
  rules(): PolicyRule[] {
    if (!this.result || this.changed()) this.reload();
    const r = this.result!;
    if ("error" in r) throw r.error;
    return r.rules;
  }

  private changed(): boolean {
    for (const [key, stamp] of this.deps) if (stampOf(key) !== stamp) return true;
    return false;
  }

  private reload(): void {
    const deps: PolicyDeps = new Map();
    this.parses++;
    try {
      this.result = { rules: loadPolicy(this.dir, deps) };
    } catch (error) {
      this.result = { error };
    }
    this.deps = deps;
  }
}

/** Where qvmd keeps the policy: DATA/policy.d. */
export function policyDirOf(dataDir: string): string {
  return path.join(dataDir, "policy.d");
}
