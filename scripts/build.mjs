// Bundles each program into one file with esbuild. Type checking is separate (npm run typecheck).
import { build } from "esbuild";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const version = JSON.parse(readFileSync(new URL("../package.json", import.meta.url))).version ?? "0.1.0";
const common = { bundle: true, platform: "node", sourcemap: false, logLevel: "warning", legalComments: "none" };
// ESM bundles of CommonJS dependencies (grpc-js) need a require().
const esmBanner = { js: "import { createRequire as __qvmCreateRequire } from 'node:module'; const require = __qvmCreateRequire(import.meta.url);" };

// The qvm CLI starts on every command, so its bundle leaves out what it never runs: oclif's
// plugin discovery (globs, matching, config files, engine checks, spinners) and grpc-js's
// proto-loader (only for channelz and ORCA, which a client does not use). Each is replaced by a
// stub that fails loudly if it is ever reached.
const cliStubs = {
  semver: "module.exports = { satisfies: () => true };",
  tinyglobby: "module.exports = { glob: async () => { throw new Error('tinyglobby is not in the qvm bundle'); } };",
  minimatch: "module.exports = { minimatch: () => { throw new Error('minimatch is not in the qvm bundle'); } };",
  lilconfig: "module.exports = { lilconfig: () => { throw new Error('lilconfig is not in the qvm bundle'); } };",
  "cli-spinners": "const s = { interval: 100, frames: ['-', '\\\\', '|', '/'] }; module.exports = { dots2: s, line: s };",
  // Only asked whether this is WSL, for oclif's platform name; its imports cost a few ms.
  "wsl-utils": "module.exports = { isWsl: false, powerShellPath: async () => 'powershell.exe' };",
  "@grpc/proto-loader": "module.exports = { loadSync: () => { throw new Error('@grpc/proto-loader is not in the qvm bundle'); } };",
  // oclif only requires it to find .ts sources in development, which a bundle never does.
  typescript: "module.exports = {};",
};
// Source edits for start-up time, each checked: the build fails if oclif changes under it.
const cliPatches = {
  // The first localeCompare initializes ICU's collator, ~10 ms of every qvm run, to sort
  // command ids that are plain ASCII.
  "@oclif/core/lib/config/plugin.js": [[".sort((a, b) => a.id.localeCompare(b.id));", ".sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));"]],
};
const stubPlugin = (stubs, patches = {}) => ({
  name: "stubs",
  setup(b) {
    const filter = new RegExp(`^(${Object.keys(stubs).map((k) => k.replace(/[/.]/g, "\\$&")).join("|")})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: "stub" }));
    b.onLoad({ filter: /.*/, namespace: "stub" }, (args) => ({ contents: stubs[args.path], loader: "js" }));
    for (const [file, edits] of Object.entries(patches)) {
      b.onLoad({ filter: new RegExp(`node_modules/${file.replace(/[/.]/g, "\\$&")}$`) }, (args) => {
        let contents = readFileSync(args.path, "utf8");
        for (const [from, to] of edits) {
          if (!contents.includes(from)) throw new Error(`${file} no longer contains ${JSON.stringify(from)}: update cliPatches in scripts/build.mjs`);
          contents = contents.replace(from, to);
        }
        return { contents, loader: "js" };
      });
    }
  },
});

const targets = {
  // Runs inside domains on Debian's Node (18 on bookworm): one self-contained file.
  "guest-agent": { entryPoints: ["guest-agent/src/main.ts"], outfile: "guest-agent/dist/qvm-agent.cjs", format: "cjs", target: "node18", minify: true,
    define: { QVM_AGENT_VERSION: JSON.stringify(version) } },
  // The in-domain qrexec tools (qrexec-client-vm, qvm-copy, …, and the services' bodies).
  "qrexec-tools": { entryPoints: ["guest-agent/src/qrexec/tools/main.ts"], outfile: "guest-agent/dist/qvm-qrexec.cjs", format: "cjs", target: "node18", minify: true },
  // The web shell: its server (run by `qvm shell`) and its page (xterm.js), served as static files.
  "gui-proxy": { entryPoints: ["gui-proxy/src/main.ts"], outfile: "gui-proxy/dist/qvm-shell.js", format: "esm", target: "node20", banner: esmBanner },
  web: { entryPoints: ["gui-proxy/web/app.ts", "gui-proxy/web/app.css"], outdir: "gui-proxy/dist/web", platform: "browser", format: "iife", target: "chrome110", minify: true },
  // A window's sandboxed display frame (noVNC). An ES module: noVNC 1.7 has a top-level await,
  // which an IIFE cannot hold; display.html loads it with <script type="module">.
  display: { entryPoints: ["gui-proxy/web/display.ts"], outfile: "gui-proxy/dist/web/display.js", platform: "browser", format: "esm", target: "chrome110", minify: true },
  images: { entryPoints: ["images/src/main.ts"], outfile: "images/dist/qvm-images.js", format: "esm", target: "node20", banner: esmBanner },
  qvmd: { entryPoints: ["host-agent/src/bin/main.ts"], outfile: "host-agent/dist/qvmd.js", format: "esm", target: "node20", banner: esmBanner },
  // The qvm CLI, one file; oclif reads its command table from this same bundle (cli/package.json).
  // CommonJS, started by cli/dist/qvm.js from a V8 code cache (see cli/src/loader.ts and cliLoader).
  cli: {
    entryPoints: ["cli/src/main.ts"],
    outfile: "cli/dist/qvm.cjs",
    format: "cjs",
    target: "node20",
    minify: true,
    plugins: [stubPlugin(cliStubs, cliPatches)],
    define: { "import.meta.url": "__qvmImportMetaUrl" },
    banner: { js: "const __qvmImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  },
  // playwright-core is loaded from node_modules: it does not survive bundling.
  bench: { entryPoints: ["tests/bench/main.ts"], outfile: "tests/dist/bench.js", format: "esm", target: "node20", banner: esmBanner, external: ["playwright-core"] },
  // npm run soak (scripts/soak.sh): start/run/stop cycles through a real qvmd.
  soak: { entryPoints: ["tests/soak/main.ts"], outfile: "tests/dist/soak.js", format: "esm", target: "node20", banner: esmBanner },
};

/**
 * After the CLI bundle: its loader (cli/dist/qvm.js, naming the bundle's hash) and a fresh code
 * cache, warmed by runs that go through oclif, help, the admin client and its error path.
 */
async function cliLoader() {
  const bundle = readFileSync("cli/dist/qvm.cjs", "utf8");
  // vm.Script cannot run a dynamic import() in Node 20 without --experimental-vm-modules.
  const dynamicImport = bundle.match(/\bimport\("node:[^"]*"\)/);
  if (dynamicImport) throw new Error(`cli/dist/qvm.cjs has ${dynamicImport[0]}: import node: modules statically in cli/src`);
  const hash = createHash("sha256").update(bundle).digest("hex").slice(0, 16);
  await build({
    ...common,
    entryPoints: ["cli/src/loader.ts"],
    outfile: "cli/dist/qvm.js",
    format: "cjs",
    target: "node20",
    define: { QVM_CLI_BUNDLE_HASH: JSON.stringify(hash) },
  });
  // cli/ is an ES module package; its dist/ holds CommonJS (the loader runs without the ESM loader).
  writeFileSync("cli/dist/package.json", '{ "type": "commonjs" }\n');
  for (const f of readdirSync("cli/dist")) if (f.endsWith(".v8cache") || f.endsWith(".tmp")) rmSync(path.join("cli/dist", f));
  const noDaemon = mkdtempSync(path.join(os.tmpdir(), "qvm-build-"));
  const env = { ...process.env, QVM_CODE_CACHE: "refresh", QVM_RUNTIME_DIR: noDaemon, NO_COLOR: "1" };
  for (const args of [["--help"], ["ls", "--help"], ["ls"], ["prefs", "--global"]]) {
    spawnSync(process.execPath, ["cli/dist/qvm.js", ...args], { env, stdio: "ignore", timeout: 20_000 });
  }
  rmSync(noDaemon, { recursive: true, force: true });
}
const postBuild = {
  cli: cliLoader,
  web: () => copyFileSync("gui-proxy/web/index.html", "gui-proxy/dist/web/index.html"),
  display: () => copyFileSync("gui-proxy/web/display.html", "gui-proxy/dist/web/display.html"),
};

const only = process.argv.slice(2);
for (const [name, opts] of Object.entries(targets)) {
  if (only.length && !only.includes(name)) continue;
  await build({ ...common, ...opts });
  await postBuild[name]?.();
}

// Host-side native helpers (C, built with the machine's gcc): SO_PEERCRED for the admin socket;
// qvm-tap-open, which hands a jailed VMM its tap device as a descriptor; qvm-qmp-add-fd, which
// hands a running VMM a USB stick's image as a descriptor (QMP add-fd with SCM_RIGHTS).
if (!only.length || only.includes("qvmd")) {
  mkdirSync("host-agent/dist", { recursive: true });
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", "host-agent/dist/qvm-peercred", "host-agent/native/qvm-peercred.c"], { stdio: "inherit" });
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", "host-agent/dist/qvm-tap-open", "host-agent/native/qvm-tap-open.c"], { stdio: "inherit" });
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", "host-agent/dist/qvm-qmp-add-fd", "host-agent/native/qvm-qmp-add-fd.c"], { stdio: "inherit" });
}
