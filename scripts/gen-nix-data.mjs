// Writes nix/generated/qvm-data.json: what the Nix side (nix/module.nix) must agree on with qvm's
// own sources, taken from those sources so that nobody keeps a second copy by hand: the labels,
// domain classes, VMM kinds, domain-name rule, default directories and admin group
// (@qvm/protocol), the domain and global properties with their defaults and bounds
// (@qvm/host-agent's PROPERTIES), the shipped systemd unit's directives
// (host-agent/systemd/qvmd.service.in, whose hardening the NixOS unit copies), the guest agent's
// unit (guest-agent/systemd/qvm-agent.service, for nix/guest-template.nix) and the JSON Schema
// of `qvm apply`'s declared-domains file (@qvm/protocol/declared), from which nix/lib/json-schema.nix
// makes the option types of `services.qvmd.domains`.
//
//   node scripts/gen-nix-data.mjs           rewrite the file
//   node scripts/gen-nix-data.mjs --check   exit 1 if the committed file is stale
//
// The sources are TypeScript and Node 20 cannot run them, so they are bundled with esbuild (as
// scripts/build.mjs does) into a temporary module and imported. @qvm/protocol's generated gRPC
// code must exist: `npm run build` (which `npm test` runs first) makes it.
// scripts/nix-data.test.mjs fails when the committed file differs from a fresh generation.
import { build } from "esbuild";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const OUTPUT = "nix/generated/qvm-data.json";
export const UNIT_TEMPLATE = "host-agent/systemd/qvmd.service.in";
export const GUEST_AGENT_UNIT = "guest-agent/systemd/qvm-agent.service";
/** Where the schema of `qvm apply`'s file is written (issue 18); named in the TODO while it is absent. */
export const DECLARED_SOURCE = "protocol/src/contracts/declared.ts";

const ENTRY = `
export { LABELS } from "@qvm/protocol/labels";
export * as contracts from "@qvm/protocol/contracts";
export { GLOBAL_PROPERTIES, PROPERTIES } from "@qvm/host-agent";
export { toJSONSchema } from "zod";
`;
/**
 * The protocol surfaces that may hold the schema of `qvm apply`'s file, the first that has it
 * winning: "@qvm/protocol/declared" where protocol/package.json exports it (the schema lives there
 * so that its zod does not load with every CLI command), else "@qvm/protocol/contracts".
 */
function declaredSurfaces(root) {
  const { exports = {} } = JSON.parse(readFileSync(path.join(root, "protocol/package.json"), "utf8"));
  return ["./declared", "./contracts"].filter((k) => Object.hasOwn(exports, k)).map((k) => `@qvm/protocol/${k.slice(2)}`);
}
const surfacesEntry = (surfaces) => surfaces.map((s, i) => `export * as s${i} from ${JSON.stringify(s)};`).join("\n");

/** Bundles `contents` (resolved from the repository root) and imports it; nothing is left behind. */
export async function importTs(contents, root = ROOT) {
  let result;
  try {
    result = await build({
      stdin: { contents, resolveDir: root, loader: "ts", sourcefile: "gen-nix-data-entry.ts" },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      write: false,
      logLevel: "silent",
      // CommonJS dependencies (grpc-js) inside an ES module bundle need a require().
      banner: { js: "import { createRequire as __qvmCreateRequire } from 'node:module'; const require = __qvmCreateRequire(import.meta.url);" },
    });
  } catch (err) {
    const hint = /protocol\/src\/gen|\.\/gen\//.test(String(err.message)) ? " (generated protocol code is missing: run `npm run build`)" : "";
    throw new Error(`gen-nix-data: cannot bundle qvm's sources${hint}: ${err.message}`, { cause: err });
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-gen-nix-data-"));
  try {
    const file = path.join(dir, "sources.mjs");
    writeFileSync(file, result.outputFiles[0].text);
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A systemd unit file as { Section: { Key: value } }; a key given more than once (DeviceAllow)
 * becomes a list, in order. Comments and blank lines are dropped. Continuation lines are refused
 * rather than guessed: the shipped unit has none.
 */
export function parseUnit(text, file = "unit") {
  const unit = {};
  let section;
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.endsWith("\\")) throw new Error(`${file}:${i + 1}: continuation lines are not supported`);
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      section = unit[header[1]] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq <= 0) throw new Error(`${file}:${i + 1}: expected a [Section] or Key=value, got ${JSON.stringify(line)}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (!Object.hasOwn(section, key)) section[key] = value;
    else section[key] = [section[key]].flat().concat(value);
  }
  return unit;
}

/** A property's table entry as data: its check and computed functions become flags. */
function propertyData(def) {
  const out = { type: def.type, doc: def.doc, fromTemplate: def.fromTemplate };
  for (const k of ["default", "global", "min", "max", "classes"]) if (def[k] !== undefined) out[k] = def[k];
  out.computed = typeof def.computed === "function";
  return out;
}

const isZodSchema = (v) => v !== null && typeof v === "object" && "_zod" in v && typeof v.safeParse === "function";

/**
 * The schema of `qvm apply`'s whole file among a module's exports: the one zod schema named
 * declared…file/config…schema (declaredFileSchema, DECLARED_CONFIG_SCHEMA, …); undefined when
 * there is none yet. Several are an error that names them, rather than a guess.
 */
export function pickDeclaredSchema(exports) {
  const named = Object.entries(exports).filter(([k, v]) => isZodSchema(v) && /declared/i.test(k) && /(file|config)/i.test(k) && /schema/i.test(k));
  if (named.length > 1) throw new Error(`several schemas could be \`qvm apply\`'s file: ${named.map(([k]) => k).join(", ")}`);
  return named.length ? { name: named[0][0], schema: named[0][1] } : undefined;
}

export async function collectData(root = ROOT) {
  const src = await importTs(ENTRY, root);
  const c = src.contracts;
  const data = {
    _generated: "by scripts/gen-nix-data.mjs from qvm's sources; do not edit: run `node scripts/gen-nix-data.mjs`",
    labels: { ...src.LABELS },
    domainClasses: [...c.DOMAIN_CLASSES],
    vmmKinds: [...c.VMM_KINDS],
    domainName: { pattern: c.DOMAIN_NAME_PATTERN.source, maxLength: c.MAX_NAME_LENGTH, reserved: [...c.RESERVED_NAMES] },
    adminGroup: c.ADMIN_GROUP,
    defaultDataDir: c.DEFAULT_DATA_DIR,
    defaultRuntimeDir: c.DEFAULT_RUNTIME_DIR,
    properties: Object.fromEntries(Object.entries(src.PROPERTIES).map(([k, v]) => [k, propertyData(v)])),
    globalProperties: Object.fromEntries(Object.entries(src.GLOBAL_PROPERTIES).map(([k, v]) => [k, propertyData(v)])),
    qvmdUnit: parseUnit(readFileSync(path.join(root, UNIT_TEMPLATE), "utf8"), UNIT_TEMPLATE),
    guestAgentUnit: parseUnit(readFileSync(path.join(root, GUEST_AGENT_UNIT), "utf8"), GUEST_AGENT_UNIT),
  };
  const surfaces = declaredSurfaces(root);
  const found = surfaces.length ? await importTs(surfacesEntry(surfaces), root) : {};
  const picks = surfaces.map((surface, i) => ({ surface, pick: pickDeclaredSchema(found[`s${i}`]) })).filter((p) => p.pick);
  if (picks.length) {
    data.domainSchemaSource = `${picks[0].surface} ${picks[0].pick.name}`;
    data.domainSchema = src.toJSONSchema(picks[0].pick.schema);
  } else {
    data.domainSchema = null;
    data.TODO_domainSchema = `no schema of \`qvm apply\`'s file is exported yet (${surfaces.join(", ")}; ${DECLARED_SOURCE}); when it is, rerun node scripts/gen-nix-data.mjs`;
  }
  return data;
}

export const render = (data) => `${JSON.stringify(data, null, 2)}\n`;

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const text = render(await collectData());
  const out = path.join(ROOT, OUTPUT);
  if (process.argv.includes("--check")) {
    const current = existsSync(out) ? readFileSync(out, "utf8") : "";
    if (current !== text) {
      process.stderr.write(`${OUTPUT} is stale: run node scripts/gen-nix-data.mjs and commit it\n`);
      process.exit(1);
    }
  } else if (!existsSync(out) || readFileSync(out, "utf8") !== text) {
    writeFileSync(out, text);
    process.stderr.write(`wrote ${OUTPUT}\n`);
  }
}
