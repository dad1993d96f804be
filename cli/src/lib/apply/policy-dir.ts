// The qrexec policy directory (DATA/policy.d), as `qvm apply` writes it. The admin API has no
// call that writes a policy file, so the CLI writes them itself, on the host qvmd runs on (the
// admin socket is local): each file whole and atomically (a temporary dot file, which qvmd's
// loader skips, then a rename), so qvmd never reads half a file. qvmd re-reads the policy when a
// file changes. Nothing here deletes a policy file, except to take back one it has just created
// (see restore).
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol/contracts";
import { POLICY_FILE_NAME_PATTERN } from "@qvm/protocol/declared";

/** Where qvmd keeps the policy, under its data directory (host-agent qrexec/policy/loader.ts: policyDirOf). */
export function policyDirOf(dataDir: string): string {
  return path.join(dataDir, "policy.d");
}

export class PolicyDir {
  constructor(readonly dir: string) {}

  /** The names of the policy files there (dot files and other names skipped, as qvmd skips them). */
  list(): string[] {
    try {
      return readdirSync(this.dir).filter((n) => !n.startsWith(".") && n.endsWith(".policy"));
    } catch (err) {
      throw fsError(`cannot read the policy directory ${this.dir}`, err);
    }
  }

  /** The file's text, or undefined if there is none. */
  read(name: string): string | undefined {
    return this.readBytes(name)?.toString("utf8");
  }

  /** Replaces (or creates) the file, atomically, mode 0644 as qvmd's own; returns what it held before, byte for byte. */
  write(name: string, text: string): Buffer | undefined {
    const previous = this.readBytes(name);
    this.replace(name, text);
    return previous;
  }

  /** Puts back what write() replaced: the old bytes, or no file when there was none before. */
  restore(name: string, previous: Buffer | undefined): void {
    if (previous === undefined) rmSync(this.pathOf(name), { force: true });
    else this.replace(name, previous);
  }

  private readBytes(name: string): Buffer | undefined {
    const file = this.pathOf(name);
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new QvmError("FAILED_PRECONDITION", `${file} is not a regular file: move it away, and apply again`);
      return readFileSync(file);
    } catch (err) {
      if (err instanceof QvmError) throw err;
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw fsError(`cannot read ${file}`, err);
    }
  }

  /** The full path of a policy file, for a name of the declared form only (no "/", no "..", no dot file). */
  pathOf(name: string): string {
    if (!POLICY_FILE_NAME_PATTERN.test(name)) throw new QvmError("INVALID_ARGUMENT", `${JSON.stringify(name)} is not a policy file name (a digit, then 0-9 a-z . _ -, ending in .policy)`);
    return path.join(this.dir, name);
  }

  private replace(name: string, content: string | Buffer): void {
    const file = this.pathOf(name);
    const tmp = path.join(this.dir, `.${name}.qvm-apply-${process.pid}.tmp`);
    try {
      const fd = openSync(tmp, "w", 0o644);
      try {
        writeFileSync(fd, content);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, file);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw fsError(`cannot write ${file}`, err);
    }
    // The rename is durable once the directory is on disk too.
    try {
      const dirFd = openSync(this.dir, "r");
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch {
      // Some filesystems refuse fsync on a directory; the file itself is complete either way.
    }
  }
}

function fsError(what: string, err: unknown): QvmError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM") return new QvmError("PERMISSION_DENIED", `${what}: permission denied: policy files are written by qvm apply itself, so run it as root (or as qvmd's user)`, { cause: err });
  return new QvmError("INTERNAL", `${what}: ${code ?? (err as Error).message}`, { cause: err });
}
