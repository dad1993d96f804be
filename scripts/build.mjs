// Bundles each program into one file with esbuild. Type checking is separate (npm run typecheck).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";

const version = JSON.parse(readFileSync(new URL("../package.json", import.meta.url))).version ?? "0.1.0";
const common = { bundle: true, platform: "node", sourcemap: false, logLevel: "warning", legalComments: "none" };
// ESM bundles of CommonJS dependencies (grpc-js) need a require().
const esmBanner = { js: "import { createRequire as __qvmCreateRequire } from 'node:module'; const require = __qvmCreateRequire(import.meta.url);" };

const targets = {
  // Runs inside domains on Debian's Node (18 on bookworm): one self-contained file.
  "guest-agent": { entryPoints: ["guest-agent/src/main.ts"], outfile: "guest-agent/dist/qvm-agent.cjs", format: "cjs", target: "node18", minify: true,
    define: { QVM_AGENT_VERSION: JSON.stringify(version) } },
  images: { entryPoints: ["images/src/main.ts"], outfile: "images/dist/qvm-images.js", format: "esm", target: "node20", banner: esmBanner },
  qvmd: { entryPoints: ["host-agent/src/daemon/main.ts"], outfile: "host-agent/dist/qvmd.js", format: "esm", target: "node20", banner: esmBanner },
  demo: { entryPoints: ["host-agent/src/demo.ts"], outfile: "host-agent/dist/qvm-demo.js", format: "esm", target: "node20", banner: esmBanner },
  bench: { entryPoints: ["tests/bench/main.ts"], outfile: "tests/dist/bench.js", format: "esm", target: "node20", banner: esmBanner },
};

const only = process.argv.slice(2);
for (const [name, opts] of Object.entries(targets)) {
  if (only.length && !only.includes(name)) continue;
  await build({ ...common, ...opts });
}

// Host-side native helpers (C, built with the machine's gcc): SO_PEERCRED for the admin socket.
if (!only.length || only.includes("qvmd")) {
  mkdirSync("host-agent/dist", { recursive: true });
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", "host-agent/dist/qvm-peercred", "host-agent/native/qvm-peercred.c"], { stdio: "inherit" });
}
