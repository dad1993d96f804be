// The data and runtime directories are qvmd's to trust: it deletes under them, reads records
// back from them and serves its admin socket in one. So each must be owned by qvmd's user and not
// writable by group or others, every parent must belong to root or qvmd's user and not be
// writable by others (sticky ones excepted), and no symbolic link on the way may belong to
// another user. Otherwise whoever owns or can write one of them
// could plant what qvmd trusts (audit finding 9: a `/tmp/qvm` another user made first).
import { lstatSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";

const WRITABLE_BY_OTHERS = 0o022;
const STICKY = 0o1000;

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");

/**
 * Refuses (FAILED_PRECONDITION) a directory qvmd must not trust, naming it and the fix. Every
 * parent up to / is checked, not only up to the first one root owns (a root-owned directory in a
 * user's directory can still be renamed by that user): each must belong to root or qvmd's user
 * and be unwritable by others or sticky (like /tmp: others cannot rename or remove what is ours
 * in it).
 */
export function checkOwnDirectory(dir: string, what: string, uid: number = process.getuid?.() ?? 0): void {
  const abs = path.resolve(dir);
  const refuse = (problem: string, fix: string) => new QvmError("FAILED_PRECONDITION", `qvmd refuses the ${what} ${abs}: ${problem}; ${fix}`);
  // A link on the way belongs to whoever made it: only root's or ours are followed.
  let prefix = "/";
  for (const part of abs.split("/").filter(Boolean)) {
    prefix = path.join(prefix, part);
    const st = lstatSync(prefix);
    if (st.isSymbolicLink() && st.uid !== 0 && st.uid !== uid) {
      throw refuse(`${prefix} is a symbolic link owned by uid ${st.uid}, who can point it anywhere`, `give the real path, or remove the link and create the directory yourself`);
    }
  }
  const real = realpathSync(abs);
  const st = statSync(real);
  if (!st.isDirectory()) throw refuse(`${real} is not a directory`, "give a directory");
  if (st.uid !== uid) {
    throw refuse(`${real} is owned by uid ${st.uid}, not by qvmd's user (uid ${uid}), so its owner could plant files qvmd trusts`, `fix: chown ${uid} ${real} (or choose another directory)`);
  }
  if (st.mode & WRITABLE_BY_OTHERS) {
    throw refuse(`${real} is writable by group or others (mode ${octal(st.mode)})`, `fix: chmod go-w ${real}`);
  }
  for (let d = path.dirname(real); ; d = path.dirname(d)) {
    const p = statSync(d);
    if (p.uid !== 0 && p.uid !== uid) {
      throw refuse(
        `its parent ${d} is owned by uid ${p.uid}, who could rename it and put another in its place`,
        `fix: chown ${uid} ${d} (or choose a directory whose parents belong to root or to qvmd's user)`,
      );
    }
    if (p.mode & WRITABLE_BY_OTHERS && !(p.mode & STICKY)) {
      throw refuse(`its parent ${d} is writable by group or others (mode ${octal(p.mode)}), who could put another in its place`, `fix: chmod go-w ${d} (or make it sticky: chmod +t ${d})`);
    }
    if (d === path.dirname(d)) return;
  }
}
