// What qvmd does once at start, before it serves: the shipped policy, volumes without a domain
// kept aside (a crash's half-made ones removed), built templates registered, running VMs
// re-attached, volatile overlays of domains that no longer run removed, disposables an earlier
// qvmd left destroyed (preloaded ones it left paused and untouched taken back), volumes of
// domains stored by an older qvmd made, and roots of templates that stopped meanwhile committed.
import type { DomainRecord } from "../model/domain.js";
import { installDefaultPolicy } from "../qrexec/policy/default-policy.js";
import type { QvmdParts } from "./parts.js";

export async function bootCore(p: QvmdParts, importTemplates: () => Promise<string[]>): Promise<void> {
  const { registry, volumes, runner, dispvms, log } = p;
  installDefaultPolicy(p.policyDir);
  for (const name of registry.assignMissingIdentities()) log(`${name}: given a qid (stored by a qvmd without network identities)`);
  sweepOrphans(p);
  await importTemplates();
  await runner.reattachAll();
  await p.network.afterReattach();
  volumes.removeStaleSpareOverlays();
  for (const name of volumes.volatileNames()) {
    if (runner.isRunning(name)) continue;
    try {
      volumes.discardVolatile(name);
    } catch (err) {
      log(`${name}: cannot remove volatile overlays left by its last run: ${(err as Error).message}`);
    }
  }
  // Preloads an earlier qvmd left paused and untouched are taken back; any other disposable goes.
  const preloaded = p.preloads.adopt();
  for (const rec of registry.list().filter((r) => r.autoCleanup && !preloaded.has(r.name))) {
    log(`${rec.name}: disposable left by an earlier qvmd; destroying it`);
    await dispvms.destroy(rec.name).catch((err: Error) => log(`${rec.name}: cannot destroy: ${err.message}`));
  }
  // Templates first: the roots of domains created from them are made from theirs.
  const order = registry.list().sort((a, b) => Number(b.class === "TemplateVM") - Number(a.class === "TemplateVM"));
  for (const rec of order) {
    if (rec.class === "DispVM") continue;
    if (!volumes.exists(rec.name)) await createMissingVolumes(p, rec);
    else if (!runner.isRunning(rec.name) && rec.class !== "AppVM") await p.locks.run(rec.name, () => commitRoot(p, rec));
  }
}

/**
 * Volume directories no domain owns: a crash's half-made ones are removed; every other one is
 * kept aside, never deleted, since a store restored from an older generation (as qvmd advises
 * when qvm.json is damaged) or a backup does not know domains made since.
 */
function sweepOrphans(p: QvmdParts): void {
  const { volumes, registry, log } = p;
  const { removed, kept } = volumes.sweepOrphans((n) => registry.store.get(n) !== undefined);
  for (const r of removed) log(`removed ${r}: volumes a crash left half-made`);
  for (const k of kept) {
    log(
      `volumes of ${JSON.stringify(k.name)} have no domain in the store: kept aside as ${k.id}, nothing deleted. ` +
        `\`qvm volume orphans\` lists them, \`qvm volume orphans restore ${k.id}\` makes a domain of them again, \`qvm volume orphans purge ${k.id}\` deletes them`,
    );
  }
}

async function commitRoot(p: QvmdParts, rec: DomainRecord): Promise<void> {
  try {
    if (await p.volumes.commitRoot(rec.name, p.registry.revisionsToKeep(rec, "root"))) p.log(`${rec.name}: root changes committed`);
  } catch (err) {
    p.log(`${rec.name}: cannot commit root changes (kept in root-dirty.qcow2, retried at the next start): ${(err as Error).message}`);
  }
}

/**
 * A domain stored by a qvmd older than the volume model has no volumes: make them, its root
 * from where it came from (a template image, or a TemplateVM), so upgrading loses nothing.
 */
async function createMissingVolumes(p: QvmdParts, rec: DomainRecord): Promise<void> {
  let rootFrom: string | undefined;
  if (rec.class !== "AppVM" && rec.rootFrom) {
    rootFrom = p.registry.store.get(rec.rootFrom) && rec.rootFrom !== rec.name ? p.volumes.files(rec.rootFrom).root : undefined;
    if (!rootFrom) {
      try {
        rootFrom = p.images.template(rec.rootFrom).root;
      } catch {
        // no such image any more: the root starts empty, as for a TemplateVM created without one
      }
    }
  }
  if (rec.props.encrypted === true) {
    // Its volume cannot be made without its passphrase, and an empty one would hide the loss.
    p.log(`${rec.name}: its encrypted volumes are missing; restore them (\`qvm volume orphans\`, \`qvm backup restore\`) or remove the domain`);
    return;
  }
  try {
    await p.volumes.create(rec.name, rec.class, { rootFrom });
    p.log(`${rec.name}: made the volumes it lacked (stored by an older qvmd)`);
    // A store restored back and forth: its own volumes may have been kept aside meanwhile.
    const kept = p.volumes.listOrphans().filter((o) => o.name === rec.name);
    if (kept.length) {
      const id = kept.at(-1)!.id;
      p.log(
        `${rec.name}: volumes kept aside under its name: ${kept.map((o) => o.id).join(", ")}; if they are its own, ` +
          `\`qvm remove ${rec.name}\` (its new, empty volumes go with it) and \`qvm volume orphans restore ${id}\``,
      );
    }
  } catch (err) {
    p.log(`${rec.name}: has no volumes and they cannot be made: ${(err as Error).message}`);
  }
}
