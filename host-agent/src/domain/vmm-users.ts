// Each domain's VMM runs as a uid of its own, from a numeric range qvmd owns: no user accounts
// are created. The uid is allocated at a domain's first start, recorded in its store record (so a
// restarted qvmd and re-attached VMMs agree), and freed when the record is removed: the next
// allocation takes the lowest uid no record holds. The gid is the same number.
import { QvmError } from "@qvm/protocol";
import type { VmmUser } from "../vmm/driver.js";
import type { DomainRegistry } from "./registry.js";

export interface VmmUidRange {
  /** First uid of the range; far above login and system accounts and usual subuid ranges. */
  base: number;
  count: number;
}

export const DEFAULT_VMM_UID_RANGE: VmmUidRange = { base: 900_000_000, count: 65_536 };

export function vmmUserOf(registry: DomainRegistry, name: string, range: VmmUidRange): VmmUser {
  const rec = registry.get(name);
  if (rec.vmmUid !== undefined && rec.vmmUid >= range.base && rec.vmmUid < range.base + range.count) return { uid: rec.vmmUid, gid: rec.vmmUid };
  const taken = new Set(registry.list().map((r) => r.vmmUid));
  for (let uid = range.base; uid < range.base + range.count; uid++) {
    if (taken.has(uid)) continue;
    registry.store.update(name, (r) => {
      r.vmmUid = uid;
    });
    return { uid, gid: uid };
  }
  throw new QvmError("RESOURCE_EXHAUSTED", `all ${range.count} VMM uids from ${range.base} are taken; remove unused domains or start qvmd with a larger --vmm-uid-range`);
}
