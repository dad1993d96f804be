// cli/dist/qvm.js: starts the qvm CLI bundle (cli/dist/qvm.cjs) from a V8 code cache, because
// start-up time matters for a CLI and Node 20 has no compile cache of its own. Compiling the
// bundle's 600 kB and then lazily compiling oclif's and grpc-js's functions costs more than all
// the rest of `qvm ls`; with the cache, V8 deserializes them instead.
//
// The bundle is CommonJS so that vm.Script can compile it with cachedData (ES modules cannot take
// a cache in Node 20), and so is this loader (cli/dist/package.json says "commonjs"): no ES module
// loader runs at all, which saves its own start-up cost. It is registered in require.cache under its own path, so when oclif loads
// its command table from the same file (cli/package.json: oclif.commands.target) it gets this
// instance instead of evaluating the file again. Inside it, dynamic import() of a file or node:
// module does not work (vm.Script needs --experimental-vm-modules for that); the build checks it.
//
// The cache (cli/dist/qvm.cjs.HASH.KEY.v8cache: HASH identifies the bundle's content, KEY the
// Node version and flags, which V8 checks a cache against) is written by `node scripts/build.mjs
// cli`, and at exit by any run that found none for its KEY (e.g. after a Node upgrade); a cache
// V8 rejects is ignored, so a stale one only costs time.
// QVM_CODE_CACHE=off disables it; =refresh (used by the build) extends it with this run's
// compiled functions.
import { readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { Module, createRequire } from "node:module";
import { Script } from "node:vm";

/** Set by scripts/build.mjs: a hash of cli/dist/qvm.cjs. */
declare const QVM_CLI_BUNDLE_HASH: string;

// Bundled as CommonJS: __dirname is cli/dist.
const dir = __dirname;
const file = `${dir}/qvm.cjs`;
const cacheFile = `${dir}/qvm.cjs.${QVM_CLI_BUNDLE_HASH}.${fnv1a(`${process.version} ${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`)}.v8cache`;
const mode = process.env.QVM_CODE_CACHE ?? "";

/** A short hash without loading node:crypto (which alone costs milliseconds). */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

let cachedData: Buffer | undefined;
if (mode !== "off") {
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // not built yet, or not readable: compile from source
  }
}
const script = new Script(Module.wrap(readFileSync(file, "utf8")), { filename: file, cachedData });
if (mode === "refresh" || (mode !== "off" && (!cachedData || script.cachedDataRejected))) {
  // At exit, so that the functions this run compiled are in it too. Best effort: a read-only
  // install simply runs without a cache.
  process.once("exit", () => {
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, script.createCachedData());
      renameSync(tmp, cacheFile);
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        // nothing written
      }
    }
  });
}

const mod = new Module(file);
mod.filename = file;
const require = createRequire(file);
require.cache[file] = mod;
(script.runInThisContext() as (...args: unknown[]) => void)(mod.exports, require, mod, file, dir);
mod.loaded = true;
