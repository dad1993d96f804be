// Checks what nix/tests/exports.nix made with qvm's own parsers (run by scripts/nix-check.sh):
//   - the kernel bundle's manifests (nix/kernel-bundle.nix) against images/src/store.ts's
//     kernelManifestSchema, and its module list against images/src/kernel.ts's INITRAMFS_MODULES;
//   - the live ISO's domains file (nix/live-iso.nix through nix/module.nix) against the schema
//     `qvm apply` parses its file with (nix/generated/qvm-data.json's domainSchemaSource).
// Argument: the JSON nix-instantiate printed. Exit 0 when all hold, 1 when one fails, 2 when qvm's
// sources cannot be loaded here (no node_modules, no generated protocol code): the caller decides.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const exported = JSON.parse(process.argv[2]);
const data = JSON.parse(readFileSync(path.join(root, "nix/generated/qvm-data.json"), "utf8"));
const [surface, name] = data.domainSchemaSource.split(" ");

let src;
try {
  const { importTs } = await import(path.join(root, "scripts/gen-nix-data.mjs"));
  src = await importTs(
    `export { kernelManifestSchema } from "./images/src/store.ts";
     export { INITRAMFS_MODULES } from "./images/src/kernel.ts";
     export { ${name} as declaredSchema } from ${JSON.stringify(surface)};`,
    root,
  );
} catch (err) {
  console.error(`[nix-check] cannot load qvm's parsers: ${err.message}`);
  process.exit(2);
}

let bad = 0;
const report = (label, ok, detail) => {
  console.error(`[nix-check] ${ok ? "ok  " : "FAIL"} ${label}${ok ? "" : `: ${detail}`}`);
  if (!ok) bad++;
};
for (const [which, manifest] of Object.entries(exported.kernelManifests)) {
  const r = src.kernelManifestSchema.safeParse(manifest);
  report(`the kernel bundle's manifest.json (${which}) passes images/src/store.ts's kernelManifestSchema`, r.success, JSON.stringify(r.error?.issues));
  report(
    `the kernel bundle's manifest.json (${which}): its hash is 24 hex digits, as the store's entries`,
    /^[0-9a-f]{24}$/.test(manifest.hash),
    manifest.hash,
  );
}
report(
  "the kernel bundle's initramfs loads images/src/kernel.ts's INITRAMFS_MODULES, in that order",
  JSON.stringify(exported.initramfsModules) === JSON.stringify(src.INITRAMFS_MODULES),
  `${JSON.stringify(exported.initramfsModules)} vs ${JSON.stringify(src.INITRAMFS_MODULES)}`,
);
const r = src.declaredSchema.safeParse(exported.liveDeclared);
report("the live ISO's declared domains are a file `qvm apply` accepts", r.success, JSON.stringify(r.error?.issues));
process.exit(bad ? 1 : 0);
