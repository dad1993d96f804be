// Architecture lint: which module may import which. Style is left to the type checker and to
// review; every rule here guards a boundary from docs/design.md and the 2026-11-30 structure review:
//   (a) across packages only a package's surface: `@qvm/x` or a subpath its package.json exports,
//       never a relative path into another package;
//   (b) no import cycles, type-only imports included: checked by dependency-cruiser
//       (.dependency-cruiser.cjs), which `npm run lint` runs after ESLint;
//   (c) host-agent's layering, lowest first:
//         base ← model ← store|storage|vmm|vsock|agent|backup ← domain ← network|qrexec|clipboard|usb|vault ← core ← admin ← bin
//       plus testing/, which may import anything; a folder imports its own layer or lower ones;
//   (d) the CLI and the web shell speak only the admin API (no @qvm/host-agent; their tests may
//       start a real qvmd through @qvm/host-agent/testing), and nothing imports the guest agent,
//       which runs inside domains.
// Not type-aware on purpose: the import rules need a resolver, not type information, and the
// whole tree lints in seconds.
import { readFileSync } from "node:fs";
import path from "node:path";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";
import importX from "eslint-plugin-import-x";
import tseslint from "typescript-eslint";
import { defineConfig } from "eslint/config";

const root = import.meta.dirname;
const readPackage = (dir) => JSON.parse(readFileSync(path.join(root, dir, "package.json"), "utf8"));
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

// (a) The allowed specifiers, read from each workspace's `exports`, so a new subpath needs only
// its package.json entry. "./*" patterns match any one subpath. A package that exports nothing
// (`"exports": {}`: the bundled guest agent and web shell, the tests) has no surface at all.
const workspaces = readPackage(".").workspaces;
const surfaces = workspaces.flatMap((dir) => {
  const { name, exports = {} } = readPackage(dir);
  return Object.keys(typeof exports === "string" ? { ".": exports } : exports).map((key) =>
    escape(key === "." ? name : `${name}/${key.slice(2)}`).replace("\\*", "[^/]+"),
  );
});
const noGuestAgent = {
  regex: "^@qvm/guest-agent(/|$)",
  caseSensitive: true,
  message: "The guest agent runs inside domains and is shipped as a bundle: nothing imports it.",
};
const surfaceOnly = {
  regex: `^(?!(?:${surfaces.join("|")})$)(?!@qvm/guest-agent(/|$))@qvm/`,
  caseSensitive: true,
  message:
    "Import another package only through its surface: `@qvm/x` or a subpath listed in its package.json `exports`. " +
    "If you need more, export it there (or move it to the package that owns it).",
};

// (c) host-agent/src folders, lowest layer first; folders on one line are one layer. testing/ sits
// above bin: it may import everything, and only tests may import it. Folders not listed here
// (daemon/ while it is being split) have no layering rule of their own.
const layers = [["base"], ["model"], ["store", "storage", "vmm", "vsock", "agent", "backup"], ["domain"], ["network", "qrexec", "clipboard", "usb", "vault"], ["core"], ["admin"], ["bin"]];
const hostSrc = "host-agent/src";
const layerZones = layers.flatMap((layer, i) => {
  const higher = layers.slice(i + 1).flat();
  const allowed = layers.slice(0, i + 1).flat().join(", ");
  return layer.flatMap((folder) => [
    {
      target: `${hostSrc}/${folder}`,
      // The package surface (src/index.ts) re-exports every layer, so it sits above them all.
      from: [...higher.map((f) => `${hostSrc}/${f}`), `${hostSrc}/index.ts`],
      message: `host-agent layering: ${folder}/ may import only ${allowed} (and the outside world).`,
    },
    {
      target: `${hostSrc}/${folder}/**/!(*.test).ts`,
      from: [`${hostSrc}/testing`],
      message: "host-agent layering: testing/ is test support; only tests may import it.",
    },
  ]);
});
layerZones.push({
  target: `${hostSrc}/index.ts`,
  from: [`${hostSrc}/testing`],
  message: "Test support is the separate `@qvm/host-agent/testing` surface, not part of the package's main one.",
});

// (d)
const packageZones = [
  {
    // Their integration tests may start a real qvmd through @qvm/host-agent/testing.
    target: ["cli/**/!(*.test).ts", "gui-proxy/**/!(*.test).ts"],
    from: ["host-agent"],
    message: "The CLI and the web shell speak only the admin API (@qvm/protocol), never @qvm/host-agent.",
  },
  {
    target: workspaces.filter((w) => w !== "guest-agent").concat(["scripts", "vitest.config.ts", "eslint.config.js"]),
    from: ["guest-agent"],
    message: noGuestAgent.message,
  },
];

export default defineConfig(
  {
    ignores: ["**/node_modules/", "**/dist/", "protocol/src/gen/", ".qvm/", "bench-results/"],
  },
  {
    files: ["**/*.{ts,mts,cts,js,mjs,cjs}"],
    languageOptions: { parser: tseslint.parser, ecmaVersion: "latest", sourceType: "module" },
    plugins: { "import-x": importX },
    settings: {
      "import-x/resolver-next": [
        createTypeScriptImportResolver({ project: ["tsconfig.json", "gui-proxy/web/tsconfig.json"], noWarnOnMultipleProjects: true }),
      ],
    },
    rules: {
      // Every rule below needs the import resolved; an unresolved one would pass them silently.
      "import-x/no-unresolved": "error",
      // (a)
      "no-restricted-imports": ["error", { patterns: [surfaceOnly, noGuestAgent] }],
      "import-x/no-relative-packages": "error",
      // (c) and (d)
      "import-x/no-restricted-paths": ["error", { basePath: root, zones: [...layerZones, ...packageZones] }],
    },
  },
  {
    files: ["**/*.cjs"],
    languageOptions: { sourceType: "commonjs" },
  },
);
