#!/usr/bin/env node
// A fake cloud-hypervisor for the driver's tests, on machines that cannot run the real one (no
// binary, no usable KVM). It takes CH's command line as the driver runs it, serves CH's REST API
// on the Unix socket given to --api-socket, writes CH's event-monitor stream and plays a guest
// behind the hybrid vsock socket and the serial console socket. Plain ESM, node: built-ins only.
//
//   fake-cloud-hypervisor.mjs --api-socket path=<sock> [--event-monitor path=<file>|fd=<n>]
//       [--seccomp true|false|log|errno] [--landlock] [--log-file <f>] [-v…] [--version]
//
// Endpoints: GET vmm.ping, vm.info, vm.counters; PUT vm.create, vm.boot, vm.shutdown, vm.reboot,
// vm.power-button, vm.pause, vm.resume, vm.delete, vm.resize, vm.resize-disk, vm.add-net,
// vm.add-disk, vm.remove-device, vm.snapshot, vm.restore, vmm.shutdown. Others answer 404.
//
// What it follows (cloud-hypervisor v53, ../../../../../../shared/vendor/cloud-hypervisor/):
// - the API: the paths, bodies and status codes of the OpenAPI description. Where the description
//   says nothing, a call in the wrong state answers 405. With FAKE_CH_API_STYLE=v53 it answers as
//   CH's code does instead (vmm/src/api/http/mod.rs): 404 only when there is no VM (or no such
//   device), 400 for a bad body, 409 for a duplicate id, 500 for everything else (wrong state
//   included), error bodies a JSON array of messages, vmm.shutdown 200, and a VM that was shut
//   down reads "Created" in vm.info;
// - a PUT that takes no body (vm.boot, vm.pause…) refuses one with 400, a GET on a PUT path and
//   the reverse are 400, an unknown path 404;
// - events: CH's names and order (vmm/src/lib.rs, vm.rs); each event is pretty-printed JSON
//   followed by a blank line; the file is truncated at start, as CH opens it;
// - hybrid vsock (docs/vsock.md, virtio-devices/src/vsock/unix/muxer.rs): the socket is bound at
//   boot or restore and fails the call if the path exists (CH does not remove a stale one);
//   "CONNECT <port>\n" (any case, at most 32 bytes) to a listening guest port gets
//   "OK <local port>\n" (from 1073741824 up) and then the "guest" echoes every byte; to any other
//   port, or after a malformed line, the connection is closed without a reply. While the VM is
//   paused the guest answers nothing (handshakes and echoes wait for resume);
// - the serial console socket is bound at vm.create (as CH does); each connection reads
//   "fake guest console\n";
// - a guest power-off (FAKE_CH_POWEROFF_AFTER_MS, or vm.power-button) ends the VMM as CH does
//   without --no-shutdown: vm/shutdown, vm/deleted, vmm/shutdown, exit 0. So does SIGTERM/SIGINT.
//
// Test knobs (environment):
//   FAKE_CH_GUEST_PORTS=1024,…      guest vsock ports that listen (default 1024)
//   FAKE_CH_FORWARD=<port>=<sock>   that guest port is a service on the host's Unix socket <sock>
//   FAKE_CH_DIAL_HOST_PORT=<p>[,…]  after the guest starts, connect once to "<vsock socket>_<p>"
//                                   (tried for 3 s until something listens) and write
//                                   "hello from guest\n"
//   FAKE_CH_POWEROFF_AFTER_MS=<n>   the guest powers off n ms after it starts running
//   FAKE_CH_DIE_ON=<endpoint>[,…]   on that request (e.g. vm.boot), exit(1) without answering
//   FAKE_CH_SLOW_MS=<n>             delay every answer by n ms
//   FAKE_CH_GARBAGE_INFO=1          vm.info answers 200 with a body that is not JSON
//   FAKE_CH_API_STYLE=v53           answer errors as CH's code does rather than as documented
//   FAKE_CH_STARTUP_DELAY_MS=<n>    bind the API socket only after n ms
//   FAKE_CH_EXIT_WITH_PARENT=1      exit when the parent process goes away (for tests)
//   FAKE_CH_MAX_LIFETIME_MS=<n>     exit (code 1) after n ms whatever happens; default 600000,
//                                   0 for never: a leaked fake does not outlive a test run
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

const VERSION = "v53.0-fake";
const env = process.env;
const started = process.hrtime.bigint();
const V53 = env.FAKE_CH_API_STYLE === "v53";
const MIB = 1024 * 1024;
const MAX_BODY = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Command line, with clap's answers to what it does not accept (exit 2, as clap does).

function clapError(msg) {
  process.stderr.write(`error: ${msg}\n\nUsage: cloud-hypervisor [OPTIONS]\n\nFor more information, try '--help'.\n`);
  process.exit(2);
}

// CH flags the fake knows but does not implement: the driver passes the VM over the API.
const UNSUPPORTED = new Set(["--kernel", "--firmware", "--igvm", "--initramfs", "--cmdline", "--disk", "--cpus", "--memory", "--memory-zone", "--net", "--vsock", "--serial", "--console", "--rng", "--balloon", "--fs", "--pmem", "--device", "--user-device", "--vdpa", "--numa", "--platform", "--tpm", "--restore", "--no-shutdown", "--landlock-rules", "--watchdog", "--pvpanic", "--rate-limit-group", "--pci-segment", "--debug-console", "--log-format", "--gdb", "--dbus-service-name", "--dbus-object-path", "--dbus-system-bus", "--rtc"]);
const TAKES_VALUE = new Set(["--api-socket", "--event-monitor", "--seccomp", "--log-file"]);

function parseArgs(argv) {
  const opts = { verbosity: 0, seccomp: "true", landlock: false };
  const seen = new Set();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (/^-v+$/.test(arg)) {
      opts.verbosity += arg.length - 1;
      continue;
    }
    if (arg === "-h" || arg === "--help") {
      process.stdout.write(`cloud-hypervisor ${VERSION} (a fake for tests)\n\nOptions:\n  --api-socket path=<path>\n  --event-monitor path=<path>|fd=<fd>\n  --seccomp true|false|log|errno\n  --landlock\n  --log-file <file>\n  -v...\n  -V, --version\n`);
      process.exit(0);
    }
    if (arg === "-V" || arg === "--version") {
      process.stdout.write(`cloud-hypervisor ${VERSION}\n`);
      process.exit(0);
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (UNSUPPORTED.has(name)) clapError(`'${name}' is a cloud-hypervisor option this fake does not implement (give the VM through the API)`);
    if (name === "--landlock") {
      if (eq > 0) clapError(`unexpected value '${arg.slice(eq + 1)}' for '--landlock' found; no more were expected`);
      opts.landlock = true;
      continue;
    }
    if (!TAKES_VALUE.has(name)) clapError(`unexpected argument '${arg}' found`);
    if (seen.has(name)) clapError(`the argument '${name} <${name.slice(2)}>' cannot be used multiple times`);
    seen.add(name);
    let value;
    if (eq > 0 && name !== arg) value = arg.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("-")) value = argv[++i];
    else clapError(`a value is required for '${name} <${name.slice(2)}>' but none was supplied`);
    if (name === "--seccomp" && !["true", "false", "log", "errno"].includes(value)) clapError(`invalid value '${value}' for '--seccomp <seccomp>'\n  [possible values: true, false, log, errno]`);
    opts[name.slice(2)] = value;
  }
  return opts;
}

/** CH's option syntax: "path=/x,fd=3" → Map; a bare value has no key. */
function parseKv(s) {
  const m = new Map();
  for (const part of s.split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) m.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return m;
}

const opts = parseArgs(process.argv.slice(2));
process.umask(0o077); // as CH does: its sockets and files are the user's alone

// ---------------------------------------------------------------------------------------------
// Log (to --log-file, which is truncated as CH creates it, else stderr) and event monitor.

let logFd = 2;
if (opts["log-file"]) {
  try {
    logFd = fs.openSync(opts["log-file"], "w");
  } catch (err) {
    process.stderr.write(`Error starting the VMM: Error creating log file: ${err.message}\n`);
    process.exit(1);
  }
}
function elapsed() {
  const ns = process.hrtime.bigint() - started;
  return { secs: Number(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
}
function log(level, msg) {
  const rank = { ERROR: 0, WARN: 0, INFO: 1, DEBUG: 2 }[level];
  if (rank > opts.verbosity) return;
  const t = elapsed();
  try {
    fs.writeSync(logFd, `cloud-hypervisor: ${(t.secs * 1e3 + t.nanos / 1e6).toFixed(6)}ms: <fake> ${level}: ${msg}\n`);
  } catch {
    // the log is best effort, as CH's
  }
}

let eventFd;
if (opts["event-monitor"] !== undefined) {
  const kv = parseKv(opts["event-monitor"]);
  try {
    if (kv.has("fd")) eventFd = Number(kv.get("fd"));
    else if (kv.has("path")) eventFd = fs.openSync(kv.get("path"), "w");
    else throw new Error("Event monitor requires path=<path> or fd=<fd>");
    if (!Number.isInteger(eventFd) || eventFd < 0) throw new Error(`bad fd ${kv.get("fd")}`);
  } catch (err) {
    process.stderr.write(`Error: Cloud Hypervisor exited with the following chain of errors:\n  0: Error parsing --event-monitor: ${err.message}\n`);
    process.exit(1);
  }
}
function event(source, name, properties = null) {
  log("INFO", `Event: source = ${source} event = ${name}`);
  if (eventFd === undefined) return;
  try {
    fs.writeSync(eventFd, `${JSON.stringify({ timestamp: elapsed(), source, event: name, properties }, null, 2)}\n\n`);
  } catch {
    // CH ignores a failed write to the monitor too
  }
}

let apiSocket;
{
  const raw = opts["api-socket"];
  if (raw === undefined) {
    process.stderr.write("fake cloud-hypervisor: --api-socket path=<path> is required (the fake has no other way to be driven)\n");
    process.exit(1);
  }
  const kv = parseKv(raw);
  if (kv.has("fd")) {
    process.stderr.write("fake cloud-hypervisor: --api-socket fd=<fd> is not implemented; give path=<path>\n");
    process.exit(1);
  }
  apiSocket = kv.get("path") ?? raw;
}

// ---------------------------------------------------------------------------------------------
// The VM.

/** @type {any} */
let config = null; // the VmConfig, once created or restored
let state = null; // "Created" | "Running" | "Paused" | "Shutdown"
let booted = false; // a VM object exists (booted or restored), as CH's VmOwnership::Owned
let vsockServer = null;
let serialServer = null;
let apiServer = null;
const boundPaths = new Set(); // socket files this process made, removed when it exits
const guestConns = new Set(); // the host's vsock connections and the guest's dials
const consoleConns = new Set();
const onResume = []; // guest work waiting while the VM is paused
let nextLocalPort = 2 ** 30;
let nextDeviceIndex = 0;
let hotplugSlot = 6;
let poweroffTimer = null;
let poweroffPending = false;
let guestStartedOnce = false;
let exiting = false;

const guestPorts = new Set(
  (env.FAKE_CH_GUEST_PORTS ?? "1024")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number),
);

/** FAKE_CH_FORWARD=<port>=<unix socket>[,…]: that guest port is a real service on the host. */
const forwards = new Map(
  (env.FAKE_CH_FORWARD ?? "")
    .split(",")
    .filter(Boolean)
    .map((f) => {
      const at = f.indexOf("=");
      return [Number(f.slice(0, at)), f.slice(at + 1)];
    }),
);
for (const port of forwards.keys()) guestPorts.add(port);

function listenUnix(server, socketPath) {
  return new Promise((resolve, reject) => {
    const onError = (err) => reject(err);
    server.once("error", onError);
    server.listen(socketPath, () => {
      server.off("error", onError);
      boundPaths.add(socketPath);
      resolve();
    });
  });
}

function closeServer(server) {
  if (!server) return;
  const where = server.address();
  if (typeof where === "string") boundPaths.delete(where);
  try {
    server.close(); // node removes the socket file of a Unix listener it closes
  } catch {
    // already closed
  }
}

async function startConsole() {
  if (config.serial?.mode !== "Socket" || typeof config.serial.socket !== "string") return;
  const server = net.createServer((sock) => {
    consoleConns.add(sock);
    sock.on("close", () => consoleConns.delete(sock));
    sock.on("error", () => {});
    sock.on("data", () => {}); // typed input goes nowhere
    sock.write("fake guest console\n");
  });
  await listenUnix(server, config.serial.socket);
  serialServer = server;
}

function stopConsole() {
  closeServer(serialServer);
  serialServer = null;
  for (const s of consoleConns) s.destroy();
}

async function startVsock() {
  if (!config.vsock || typeof config.vsock.socket !== "string") return;
  const server = net.createServer(onHostVsockConnection);
  await listenUnix(server, config.vsock.socket);
  vsockServer = server;
}

function stopVsock() {
  closeServer(vsockServer);
  vsockServer = null;
  for (const s of guestConns) s.destroy();
  guestConns.clear();
}

/** Runs fn now if the guest runs, else when it is resumed (a paused guest answers nothing). */
function whenRunning(fn) {
  if (state === "Running") fn();
  else onResume.push(fn);
}

function onHostVsockConnection(sock) {
  guestConns.add(sock);
  sock.on("close", () => guestConns.delete(sock));
  sock.on("error", () => {});
  let buf = Buffer.alloc(0);
  const onData = (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0) {
      if (buf.length >= 32) sock.destroy(); // CH reads at most 32 bytes of command
      return;
    }
    sock.off("data", onData);
    sock.pause();
    const line = buf.subarray(0, nl).toString("latin1");
    const early = buf.subarray(nl + 1); // data sent right behind the command
    const m = /^connect (.*)$/i.exec(line);
    const port = m && /^\s*\d+\s*$/.test(m[1]) ? Number(m[1]) : NaN;
    if (!Number.isInteger(port) || port > 0xffffffff) {
      log("INFO", `vsock: invalid connect command ${JSON.stringify(line.slice(0, 40))}`);
      sock.destroy();
      return;
    }
    whenRunning(() => {
      if (sock.destroyed) return;
      if (!guestPorts.has(port)) {
        // The guest answers RST; CH closes the host's connection without a word.
        log("INFO", `vsock: guest port ${port} refused the connection`);
        sock.destroy();
        return;
      }
      sock.write(`OK ${nextLocalPort++}\n`);
      const forward = forwards.get(port);
      if (forward) {
        // A real service on the host stands in for the guest's (a test's in-process agent).
        const peer = net.connect(forward);
        peer.on("error", () => sock.destroy());
        sock.on("error", () => peer.destroy());
        if (early.length) peer.write(early);
        sock.pipe(peer);
        peer.pipe(sock);
        sock.resume();
        return;
      }
      if (early.length) sock.write(early);
      sock.on("data", (d) => sock.write(d));
      sock.on("end", () => sock.end());
      sock.resume();
    });
  };
  sock.on("data", onData);
}

function dialHost() {
  const ports = (env.FAKE_CH_DIAL_HOST_PORT ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (!config.vsock?.socket) return;
  for (const p of ports) dialHostPort(p, `${config.vsock.socket}_${p}`, DIAL_HOST_ATTEMPTS);
}

/** As a guest that starts before the host listens (the agent's ready signal): a few tries. */
const DIAL_HOST_ATTEMPTS = 30;
function dialHostPort(p, target, attempts) {
  const sock = net.connect(target);
  guestConns.add(sock);
  sock.on("close", () => guestConns.delete(sock));
  sock.on("error", (err) => {
    if (attempts > 1) setTimeout(() => dialHostPort(p, target, attempts - 1), 100);
    else log("WARN", `vsock: the guest's connection to host port ${p} (${target}) failed: ${err.message}`);
  });
  sock.on("connect", () => sock.write("hello from guest\n"));
  sock.on("data", () => {});
  sock.on("end", () => sock.end());
}

/** The guest starts running (after boot, or the first resume of a restored VM). */
function guestRunning() {
  if (guestStartedOnce) return;
  guestStartedOnce = true;
  dialHost();
  const after = Number(env.FAKE_CH_POWEROFF_AFTER_MS);
  if (env.FAKE_CH_POWEROFF_AFTER_MS && Number.isFinite(after) && after >= 0) {
    poweroffTimer = setTimeout(() => {
      poweroffTimer = null;
      if (state === "Running") guestPowerOff();
      else if (state === "Paused") poweroffPending = true;
    }, after);
  }
}

function stopGuest() {
  if (poweroffTimer) clearTimeout(poweroffTimer);
  poweroffTimer = null;
  poweroffPending = false;
  guestStartedOnce = false;
  onResume.length = 0;
  stopVsock();
}

function setRunning() {
  state = "Running";
  for (const s of guestConns) s.resume();
  const queued = onResume.splice(0);
  for (const fn of queued) fn();
  if (poweroffPending) {
    poweroffPending = false;
    setTimeout(guestPowerOff, 0);
  }
}

function setPaused() {
  state = "Paused";
  for (const s of guestConns) s.pause();
}

/** vm_shutdown: the VM object goes, the config stays. */
function shutdownVm() {
  stopGuest();
  booted = false;
  state = V53 ? "Created" : "Shutdown";
  event("vm", "shutdown");
}

/** vm_delete: shut down if booted, then forget the config. */
function deleteVm() {
  if (!config) return;
  if (booted) shutdownVm();
  stopConsole();
  config = null;
  state = null;
  event("vm", "deleted");
}

/** CH's VMM exit (guest power-off, SIGTERM, vmm.shutdown): delete the VM, then vmm/shutdown. */
function vmmShutdown() {
  deleteVm();
  event("vmm", "shutdown");
}

function exitNow(code) {
  if (exiting) return;
  exiting = true;
  stopGuest();
  stopConsole();
  closeServer(apiServer);
  for (const p of boundPaths) {
    try {
      fs.unlinkSync(p);
    } catch {
      // gone already
    }
  }
  log("INFO", `exiting with ${code}`);
  process.exit(code);
}

function guestPowerOff() {
  if (exiting || state !== "Running") return;
  log("INFO", "the guest powered off");
  vmmShutdown();
  exitNow(0);
}

// ---------------------------------------------------------------------------------------------
// The API.

class ApiRefusal extends Error {
  /** doc: the status the API description gives; v53: the one CH's code gives; chain: messages. */
  constructor(doc, v53, chain) {
    super(chain.join(": "));
    this.status = V53 ? v53 : doc;
    this.chain = chain;
  }
}
const refuse = (doc, v53, ...chain) => {
  throw new ApiRefusal(doc, v53, chain);
};

/** CH's error body: a JSON array of the error chain (v53), or the chain as one line of text. */
function errorBody(chain, fromApi = true) {
  return V53 ? { type: "application/json", text: JSON.stringify(fromApi ? ["Error from API", ...chain] : chain) } : { type: "text/plain", text: chain.join(": ") };
}

function parseBody(body, what) {
  if (body.length === 0) refuse(400, 400, `${what} needs a body`);
  try {
    const v = JSON.parse(body.toString("utf8"));
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (err) {
    return refuse(400, 400, "Failed to deserialize JSON", err.message);
  }
}

function noBody(body) {
  if (body.length > 0) refuse(400, 400, "Bad Request");
}

function fileUrlDir(url, what) {
  if (typeof url !== "string" || !url.startsWith("file://")) refuse(500, 500, what, `Could not extract path from URL: ${url}`);
  const dir = url.slice("file://".length);
  let isDir = false;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch {
    // not there
  }
  if (!isDir) refuse(500, 500, what, `Destination is not a directory: "${dir}"`);
  return dir;
}

function deviceIds() {
  const ids = [];
  for (const key of ["disks", "net", "fs", "pmem", "devices", "user_devices", "vdpa", "generic_vhost_user"]) {
    for (const d of config[key] ?? []) if (d && typeof d.id === "string") ids.push(d.id);
  }
  if (typeof config.vsock?.id === "string") ids.push(config.vsock.id);
  return ids;
}

function memoryActualSize() {
  const size = Number.isSafeInteger(config.memory?.size) ? config.memory.size : 512 * MIB;
  const balloon = booted && Number.isSafeInteger(config.balloon?.size) ? config.balloon.size : 0;
  return Math.max(0, size - balloon);
}

const noVm = (what) => refuse(404, 500, what, "VM is not running");

/** Handlers: (body) → undefined (204), or { status, json } / { status, text }. */
const PUT = {
  async "vm.create"(body) {
    const cfg = parseBody(body, "vm.create");
    if (!cfg.payload || typeof cfg.payload !== "object") refuse(400, 400, "Failed to deserialize JSON", "missing field `payload`");
    if (config) refuse(405, 500, "The VM could not be created", "VM is already created");
    config = cfg;
    state = "Created";
    try {
      await startConsole();
    } catch (err) {
      config = null;
      state = null;
      refuse(500, 500, "The VM could not be created", "Error creating console devices", err.message);
    }
  },

  async "vm.boot"(body) {
    noBody(body);
    if (booted) refuse(405, 500, "The VM could not boot", "VM is already created");
    event("vm", "booting");
    if (!config) refuse(404, 404, "The VM could not boot", "VM config is missing");
    if (!serialServer) await startConsole().catch(() => {});
    try {
      await startVsock();
    } catch (err) {
      refuse(500, 500, "The VM could not boot", "Error creating virtio-vsock device", `Error binding to the host Unix socket ${config.vsock.socket}: ${err.message}`);
    }
    booted = true;
    state = "Running";
    event("vm", "booted");
    guestRunning();
  },

  "vm.pause"(body) {
    noBody(body);
    if (!booted) return config ? refuse(405, 500, "The VM could not be paused", "VM is not running") : noVm("The VM could not be paused");
    event("vm", "pausing");
    if (state !== "Running") refuse(405, 500, "The VM could not be paused", `Invalid transition: InvalidStateTransition(${state}, Paused)`);
    setPaused();
    event("vm", "paused");
  },

  "vm.resume"(body) {
    noBody(body);
    if (!booted) return config ? refuse(405, 500, "The VM could not resume", "VM is not running") : noVm("The VM could not resume");
    event("vm", "resuming");
    if (state !== "Paused") refuse(405, 500, "The VM could not resume", `Invalid transition: InvalidStateTransition(${state}, Running)`);
    setRunning();
    event("vm", "resumed");
    guestRunning();
  },

  "vm.shutdown"(body) {
    noBody(body);
    if (!booted) return config ? refuse(405, 500, "The VM could not shutdown", "VM is not running") : noVm("The VM could not shutdown");
    shutdownVm();
  },

  async "vm.reboot"(body) {
    noBody(body);
    if (!booted) return config ? refuse(405, 500, "The VM could not reboot", "VM is not running") : noVm("The VM could not reboot");
    event("vm", "rebooting");
    stopGuest();
    try {
      await startVsock();
    } catch (err) {
      booted = false;
      state = V53 ? "Created" : "Shutdown";
      refuse(500, 500, "The VM could not reboot", "Error creating virtio-vsock device", err.message);
    }
    setRunning();
    event("vm", "rebooted");
    guestRunning();
  },

  "vm.resize"(body) {
    const req = parseBody(body, "vm.resize");
    const { desired_vcpus: vcpus, desired_ram: ram, desired_balloon: balloon } = req;
    for (const [k, v] of Object.entries({ desired_vcpus: vcpus, desired_ram: ram, desired_balloon: balloon })) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v < (k === "desired_vcpus" ? 1 : 0))) refuse(400, 400, "Failed to deserialize JSON", `${k}: bad value ${v}`);
    }
    if (!config) refuse(404, 404, "The VM could not be resized", "VM is not created");
    if (vcpus !== undefined && vcpus > (config.cpus?.max_vcpus ?? 1)) refuse(500, 500, "The VM could not be resized", "Error from CPU manager", `${vcpus} vCPUs is more than max_vcpus`);
    if (balloon !== undefined && !config.balloon) refuse(500, 500, "The VM could not be resized", "No balloon device");
    if (booted) event("vm", "resizing");
    if (vcpus !== undefined) config.cpus = { ...(config.cpus ?? { max_vcpus: vcpus }), boot_vcpus: vcpus };
    if (ram !== undefined) config.memory = { ...(config.memory ?? {}), size: ram };
    if (balloon !== undefined) config.balloon = { ...config.balloon, size: balloon };
    if (booted) event("vm", "resized");
  },

  "vm.power-button"(body) {
    noBody(body);
    if (!booted) return config ? refuse(405, 500, "Error activating power button", "VM is not running") : noVm("Error activating power button");
    if (state !== "Running") refuse(405, 500, "Error activating power button", `the VM is ${state}`);
    // The guest hears the ACPI button and powers off a moment later.
    setTimeout(guestPowerOff, 50);
  },

  "vm.delete"(body) {
    noBody(body);
    deleteVm();
  },

  "vm.resize-disk"(body) {
    const req = parseBody(body, "vm.resize-disk");
    if (typeof req.id !== "string" || !Number.isSafeInteger(req.desired_size) || req.desired_size < 0) refuse(400, 400, "Failed to deserialize JSON", "id and desired_size are required");
    if (!config) refuse(404, 404, "The disk could not be resized", "VM is not created");
    if (!booted) refuse(500, 500, "The disk could not be resized", "Failed resizing a disk");
    if (!(config.disks ?? []).some((d) => d?.id === req.id)) refuse(404, 404, "The disk could not be resized", `Unknown device id: ${req.id}`);
  },

  "vm.add-net"(body) {
    return addDevice(body, "net", "_net", "vm.add-net");
  },

  "vm.add-disk"(body) {
    return addDevice(body, "disks", "_disk", "vm.add-disk");
  },

  "vm.remove-device"(body) {
    const req = parseBody(body, "vm.remove-device");
    if (typeof req.id !== "string") refuse(400, 400, "Failed to deserialize JSON", "missing field `id`");
    if (!config) refuse(404, 404, "The device could not be removed from the VM", "VM is not created");
    let found = false;
    for (const key of ["disks", "net", "fs", "pmem", "devices", "user_devices", "vdpa", "generic_vhost_user"]) {
      const list = config[key];
      if (!Array.isArray(list)) continue;
      const i = list.findIndex((d) => d?.id === req.id);
      if (i >= 0) {
        list.splice(i, 1);
        found = true;
      }
    }
    if (!found && config.vsock?.id === req.id) {
      if (booted) stopVsock();
      delete config.vsock;
      found = true;
    }
    if (!found) refuse(404, 404, "The device could not be removed from the VM", `No device with id ${req.id} to remove`);
    if (booted) event("vm", "device-removed", { id: req.id, bdf: "0000:00:06.0" });
  },

  "vm.snapshot"(body) {
    const req = parseBody(body, "vm.snapshot");
    if (typeof req.destination_url !== "string") refuse(400, 400, "Failed to deserialize JSON", "missing field `destination_url`");
    if (!booted) return config ? refuse(405, 500, "The VM could not be snapshotted", "VM is not running") : noVm("The VM could not be snapshotted");
    event("vm", "snapshotting");
    if (state !== "Paused") refuse(405, 500, "The VM could not be snapshotted", "Snapshot error", "Trying to snapshot while VM is running");
    const dir = fileUrlDir(req.destination_url, "The VM could not be snapshotted");
    try {
      // CH creates each file with create_new: a snapshot never overwrites another.
      fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config), { flag: "wx" });
      fs.writeFileSync(path.join(dir, "state.json"), JSON.stringify({ fake: true, vm_state: state, guest_ports: [...guestPorts] }), { flag: "wx" });
      fs.writeFileSync(path.join(dir, "memory-ranges"), Buffer.alloc(4096), { flag: "wx" });
    } catch (err) {
      refuse(500, 500, "The VM could not be snapshotted", "Error sending the snapshot", err.message);
    }
    event("vm", "snapshotted");
  },

  async "vm.restore"(body) {
    const req = parseBody(body, "vm.restore");
    if (typeof req.source_url !== "string") refuse(400, 400, "Failed to deserialize JSON", "missing field `source_url`");
    if (req.resume !== undefined && typeof req.resume !== "boolean") refuse(400, 400, "Failed to deserialize JSON", "resume: expected a boolean");
    // The description: "404 ... could not be restored because it is already created".
    if (config) refuse(404, 500, "The VM could not be restored", "VM is already created");
    const dir = fileUrlDir(req.source_url, "The VM could not be restored");
    let cfg;
    try {
      cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
      if (!cfg || typeof cfg !== "object" || !cfg.payload) throw new Error("no VmConfig in config.json");
      fs.accessSync(path.join(dir, "state.json"));
    } catch (err) {
      refuse(500, 500, "The VM could not be restored", "Error restoring the VM", err.message);
    }
    config = cfg;
    state = "Created";
    try {
      await startConsole();
      await startVsock();
    } catch (err) {
      stopVsock();
      stopConsole();
      config = null;
      state = null;
      refuse(500, 500, "The VM could not be restored", "Error creating devices", err.message);
    }
    booted = true;
    event("vm", "restoring");
    setPaused();
    event("vm", "restored");
    if (req.resume === true) {
      event("vm", "resuming");
      setRunning();
      event("vm", "resumed");
      guestRunning();
    }
  },

  "vmm.shutdown"(body) {
    noBody(body);
    vmmShutdown();
    return { status: V53 ? 200 : 204, afterwards: () => exitNow(0) };
  },
};

function addDevice(body, key, prefix, what) {
  const dev = parseBody(body, what);
  if (!config) refuse(404, 404, "The device could not be added to the VM", "VM is not created");
  if (dev.id !== undefined && typeof dev.id !== "string") refuse(400, 400, "Failed to deserialize JSON", "id: expected a string");
  const id = dev.id ?? `${prefix}${nextDeviceIndex++}`;
  if (deviceIds().includes(id)) refuse(409, 409, "The device could not be added to the VM", `Identifier ${id} is not unique`);
  config[key] = [...(config[key] ?? []), { ...dev, id }];
  if (!booted) return undefined; // a cold add: 204, into the config only
  const bdf = `0000:00:${(hotplugSlot++).toString(16).padStart(2, "0")}.0`;
  return { status: 200, json: { id, bdf } };
}

const GET = {
  "vmm.ping"() {
    return { status: 200, json: { version: VERSION, build_version: "fake", pid: process.pid, features: [] } };
  },
  "vm.info"() {
    if (!config) refuse(404, 404, "The VM info is not available", "VM is not created");
    if (env.FAKE_CH_GARBAGE_INFO === "1") return { status: 200, text: "<html>not json\u001b[2J</html>" };
    return { status: 200, json: { config, state, memory_actual_size: memoryActualSize() } };
  },
  "vm.counters"() {
    if (!booted) return config ? refuse(500, 500, "Error getting counters", "VM is not running") : noVm("Error getting counters");
    return { status: 200, json: {} };
  },
};

const dieOn = new Set(
  (env.FAKE_CH_DIE_ON ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
);
const slowMs = Number(env.FAKE_CH_SLOW_MS) || 0;

// CH's micro_http handles one request at a time, so do we: a request waits for those before it.
let queue = Promise.resolve();

function send(res, status, type, text) {
  const headers = { Server: "Cloud Hypervisor API", "Content-Type": type };
  if (text === undefined) {
    res.writeHead(status, headers);
    return new Promise((r) => res.end(r));
  }
  const buf = Buffer.from(text);
  res.writeHead(status, { ...headers, "Content-Length": buf.length });
  return new Promise((r) => res.end(buf, r));
}

async function handle(req, res, body) {
  const url = (req.url ?? "").split("?")[0];
  const what = url.startsWith("/api/v1/") ? url.slice("/api/v1/".length) : undefined;
  if (what !== undefined && dieOn.has(what)) {
    log("ERROR", `dying on ${what} (FAKE_CH_DIE_ON)`);
    process.exit(1);
  }
  if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
  const table = req.method === "PUT" ? PUT : req.method === "GET" ? GET : undefined;
  const known = what !== undefined && (Object.hasOwn(PUT, what) || Object.hasOwn(GET, what));
  log("DEBUG", `${req.method} ${url}`);
  let reply;
  try {
    if (!known) {
      const e = errorBody(["Not Found"], false);
      return await send(res, 404, e.type, e.text);
    }
    if (!table || !Object.hasOwn(table, what)) {
      const e = errorBody(["Bad Request"], false);
      return await send(res, 400, e.type, e.text);
    }
    reply = await table[what](body);
  } catch (err) {
    if (!(err instanceof ApiRefusal)) {
      log("ERROR", `${what}: ${err.stack ?? err}`);
      err = new ApiRefusal(500, 500, [String(err.message ?? err)]);
    }
    log("INFO", `HTTP API error response: ${err.status} ${err.message}`);
    const e = errorBody(err.chain, err.status !== 400); // a bad request never reaches CH's VMM thread
    return await send(res, err.status, e.type, e.text);
  }
  if (!reply) return await send(res, 204, "application/json");
  if (reply.json !== undefined) await send(res, reply.status, "application/json", JSON.stringify(reply.json));
  else await send(res, reply.status, "application/json", reply.text);
  reply.afterwards?.();
}

function onRequest(req, res) {
  const parts = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size <= MAX_BODY) parts.push(c);
  });
  req.on("end", () => {
    const body = Buffer.concat(parts);
    queue = queue.then(() =>
      size > MAX_BODY
        ? send(res, 400, V53 ? "application/json" : "text/plain", V53 ? '["Bad Request"]' : "Bad Request: the body is too large")
        : handle(req, res, body).catch((err) => log("ERROR", `answering ${req.url}: ${err}`)),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Start.

process.on("SIGTERM", () => {
  log("INFO", "SIGTERM");
  vmmShutdown();
  exitNow(0);
});
process.on("SIGINT", () => {
  vmmShutdown();
  exitNow(0);
});

const maxLifetime = env.FAKE_CH_MAX_LIFETIME_MS === undefined ? 600_000 : Number(env.FAKE_CH_MAX_LIFETIME_MS);
if (Number.isFinite(maxLifetime) && maxLifetime > 0) {
  setTimeout(() => {
    log("ERROR", `still running after FAKE_CH_MAX_LIFETIME_MS=${maxLifetime}: exiting`);
    vmmShutdown();
    exitNow(1);
  }, maxLifetime).unref();
}
if (env.FAKE_CH_EXIT_WITH_PARENT === "1") {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) {
      log("INFO", "the parent went away: exiting");
      vmmShutdown();
      exitNow(0);
    }
  }, 200).unref();
}

log("INFO", `fake cloud-hypervisor ${VERSION} starting (seccomp ${opts.seccomp}${opts.landlock ? ", landlock" : ""})`);
event("vmm", "starting");

const startupDelay = Number(env.FAKE_CH_STARTUP_DELAY_MS) || 0;
if (startupDelay > 0) await new Promise((r) => setTimeout(r, startupDelay));

// CH removes a stale socket at the path (it holds a lock beside it first) and binds anew.
try {
  fs.unlinkSync(apiSocket);
} catch {
  // none there
}
apiServer = http.createServer(onRequest);
apiServer.keepAliveTimeout = 60_000;
try {
  await listenUnix(apiServer, apiSocket);
} catch (err) {
  process.stderr.write(`Error: Cloud Hypervisor exited with the following chain of errors:\n  0: Error starting the VMM thread\n  1: Error creating the API server socket: ${err.message}\n`);
  process.exit(1);
}
log("INFO", `API listening on ${apiSocket}`);
