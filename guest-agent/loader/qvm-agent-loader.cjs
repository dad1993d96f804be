"use strict";
// Starts the guest agent from its bundle with V8's code cache, made when the template was built
// (images/src/template.ts). Debian's Node has no startup snapshot and no code cache of its own,
// so under emulation compiling the 0.5 MB bundle at every boot costs a noticeable part of the
// agent's start-up (docs/performance.md). A cache V8 rejects (another Node, other flags) is
// ignored: the bundle is then compiled as usual.
//
//   QVM_AGENT_WRITE_CACHE=1  run the agent until it listens, write the cache, exit (template build)
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const Module = require("node:module");

const bundle = process.env.QVM_AGENT_BUNDLE || path.join(__dirname, "qvm-agent.cjs");
const cacheFile = `${bundle}.v8cache`;
const writing = process.env.QVM_AGENT_WRITE_CACHE === "1";

let cachedData;
if (!writing) {
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    // No cache: compile as usual.
  }
}
const script = new vm.Script(Module.wrap(fs.readFileSync(bundle, "utf8")), { filename: bundle, cachedData });
if (cachedData && script.cachedDataRejected) process.stderr.write(`qvm-agent: ${cacheFile} does not fit this Node; compiling\n`);
const mod = new Module(bundle, null);
mod.filename = bundle;
mod.paths = Module._nodeModulePaths(path.dirname(bundle));
script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(bundle), mod, bundle, path.dirname(bundle));

if (writing) {
  // The cache holds what V8 has compiled so far: wait until the agent listens, then send it one
  // Ping, so that serving a first request (the host's readiness check) is compiled too.
  const socket = process.env.QVM_AGENT_SOCKET;
  const started = Date.now();
  const write = () => {
    fs.writeFileSync(cacheFile, script.createCachedData());
    process.exit(0);
  };
  const poll = setInterval(() => {
    if (Date.now() - started > 30_000) return write();
    if (!socket || !fs.existsSync(socket)) return;
    clearInterval(poll);
    pingOnce(socket, () => write());
  }, 50);
}

/** One gRPC Ping (an empty request: a 5-byte message header) over HTTP/2 on the agent's socket. */
function pingOnce(socket, done) {
  const http2 = require("node:http2");
  const net = require("node:net");
  const timer = setTimeout(done, 10_000);
  const finish = () => {
    clearTimeout(timer);
    done();
  };
  const session = http2.connect("http://localhost", { createConnection: () => net.connect(socket) });
  session.on("error", finish);
  const req = session.request({ ":method": "POST", ":path": "/qvm.agent.v1.GuestAgent/Ping", "content-type": "application/grpc", te: "trailers" });
  req.on("error", finish);
  req.resume();
  req.on("end", () => {
    session.close();
    finish();
  });
  req.end(Buffer.alloc(5));
}
