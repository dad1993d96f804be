// The runner's storage work (RunStorage) done by the volume store: committing a stopped
// template's root with its revisions_to_keep, discarding a stopped domain's volatile overlays,
// what overlays may still take of the data disk, and the pending growth of a private filesystem.
import { existsSync, rmSync } from "node:fs";
import { DEFAULT_REVISIONS_TO_KEEP, type VolumeStore } from "../storage/volumes.js";
import type { DomainRegistry } from "./registry.js";
import type { RunStorage } from "./runner.js";

export function volumeRunStorage(volumes: VolumeStore, registry: DomainRegistry, log: (msg: string) => void): RunStorage {
  return {
    async commitRoot(name) {
      try {
        const rec = registry.store.get(name);
        const keep = rec ? registry.revisionsToKeep(rec, "root") : DEFAULT_REVISIONS_TO_KEEP;
        if (await volumes.commitRoot(name, keep)) log(`${name}: root changes committed`);
      } catch (err) {
        log(`${name}: cannot commit root changes (kept in root-dirty.qcow2, retried at the next start): ${(err as Error).message}`);
      }
    },
    discardVolatile(name) {
      try {
        volumes.discardVolatile(name);
      } catch (err) {
        log(`${name}: cannot remove its volatile overlays (removed at its next start): ${(err as Error).message}`);
      }
    },
    prepareNextStart(name) {
      const rec = registry.store.get(name);
      if (!rec || rec.class !== "AppVM" || !volumes.isEncrypted(name)) return;
      const template = String(registry.resolve(rec, "template"));
      if (!template) return;
      void volumes.makeSpareOverlay(name, volumes.files(template).root).catch((err: Error) => log(`${name}: cannot make its next root overlay ahead (its next start makes one): ${err.message}`));
    },
    overlayGrowth: (name) => volumes.overlayGrowth(name),
    freeBytes: () => volumes.freeBytes(),
    checkGrow: (name, sizeBytes) => volumes.checkGrow(name, sizeBytes),
    growPending: (name) => existsSync(volumes.growFlag(name)),
    growDone: (name) => rmSync(volumes.growFlag(name), { force: true }),
  };
}
