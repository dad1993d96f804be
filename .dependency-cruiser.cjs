// Rule (b) of the architecture lint (see eslint.config.js): no import cycles anywhere, across
// packages too. dependency-cruiser instead of import-x/no-cycle because it also counts
// type-only imports (tsPreCompilationDeps): a type-only back edge still ties two modules
// together, and the one cycle the 2026-11-30 structure review found
// (qrexec host ↔ qvmd) runs through an `import type`, which import-x/no-cycle skips.
/** @type {import("dependency-cruiser").IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Import cycles make layers meaningless; break the cycle with a port (an interface the lower module owns).",
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "(^|/)node_modules/" },
    exclude: { path: "(^|/)(node_modules|dist|\\.qvm|bench-results)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    // The workspaces' `exports` point at .ts sources; resolve them the way Node and tsc do.
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
