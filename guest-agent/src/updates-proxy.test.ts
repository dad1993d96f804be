// The updates proxy (templates update without a netvm, as in Qubes), as shipped in the template:
// guest-agent/net-services/qvm-net-services with a stand-in systemctl, qubes.UpdatesProxy, and
// the whole path of apt's connection with each domain in a network namespace of its own:
//   template: 127.0.0.1:8082 (systemd-socket-activate --inetd --accept, as
//   qvm-updates-proxy-forwarder.socket with Accept=yes) → the unit's ExecStart, qrexec-client-vm
//   (the bundle) → the real router over a Unix socket → qubes.UpdatesProxy in the net domain's
//   namespace → tinyproxy with our configuration on 127.0.0.1:8082 → a web server on 192.0.2.1
//   (an address of that namespace's loopback, which the proxy's filter does not refuse).
// The tests run as root (unshare, nsenter). tinyproxy is the host's (Debian tinyproxy-bin).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QrexecRouter, parsePolicy, type DomainFacts, type QrexecHost } from "@qvm/host-agent";

const guestAgent = path.resolve(import.meta.dirname, "..");
const netServices = path.join(guestAgent, "net-services/qvm-net-services");
const updatesProxyService = path.join(guestAgent, "rpc/qubes.UpdatesProxy");
const units = path.join(guestAgent, "systemd");

let dir = "";
let fakeBin = "";
const children: ChildProcess[] = [];

/** A stand-in systemctl: logs its arguments; `is-active` says inactive; `start` runs $SYSTEMCTL_START in the background. */
const FAKE_SYSTEMCTL = `#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case $1 in
  is-active) exit 3 ;;
  start) if [ -n "\${SYSTEMCTL_START:-}" ]; then sh -c "$SYSTEMCTL_START" </dev/null >/dev/null 2>&1 & fi ;;
esac
exit "\${SYSTEMCTL_RC:-0}"
`;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runScript(argv: string[], env: Record<string, string>, stdin = ""): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}`, ...env }, stdio: "pipe" });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    // A script may exit without reading its stdin.
    child.stdin.on("error", () => {});
    child.stdin.end(stdin);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Sets up one domain's files for qvm-net-services: QVM_TEST_ROOT and the systemctl log. */
function domainRoot(name: string) {
  const root = path.join(dir, name);
  mkdirSync(root, { recursive: true });
  const log = path.join(root, "systemctl.log");
  writeFileSync(log, "");
  const env = { QVM_TEST_ROOT: root, SYSTEMCTL_LOG: log };
  return {
    root,
    env,
    calls: () => readFileSync(log, "utf8").split("\n").filter(Boolean),
    netServices: (args: string[], extra: Record<string, string> = {}) => runScript(["sh", netServices, ...args], { ...env, ...extra }),
  };
}

/** Only the ExecStart= of a unit file. */
function execStart(unit: string): string[] {
  const m = /^ExecStart=(.*)$/m.exec(readFileSync(path.join(units, unit), "utf8"));
  return m![1]!.trim().split(/\s+/);
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-updates-proxy-"));
  fakeBin = path.join(dir, "bin");
  mkdirSync(fakeBin);
  writeFileSync(path.join(fakeBin, "systemctl"), FAKE_SYSTEMCTL);
  chmodSync(path.join(fakeBin, "systemctl"), 0o755);
});

afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

describe("qvm-net-services", () => {
  it("updates-client on writes apt's proxy configuration and starts the forwarder socket; twice changes nothing", async () => {
    const d = domainRoot("tmpl-on");
    expect(await d.netServices(["updates-client", "on"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const conf = path.join(d.root, "etc/apt/apt.conf.d/01qvm-updates-proxy");
    const text = readFileSync(conf, "utf8");
    expect(text).toMatch(/^Acquire::http::Proxy "http:\/\/127\.0\.0\.1:8082\/";$/m);
    expect(text).toMatch(/^Acquire::https::Proxy "http:\/\/127\.0\.0\.1:8082\/";$/m);
    expect(existsSync(path.join(d.root, "run/qvm-service/updates-client"))).toBe(true);
    expect(d.calls()).toEqual(["start qvm-updates-proxy-forwarder.socket"]);
    // apt reads it as meant (apt-config from the host's apt).
    const apt = spawnSync("apt-config", ["shell", "HTTP", "Acquire::http::Proxy", "HTTPS", "Acquire::https::Proxy"], { env: { ...process.env, APT_CONFIG: conf }, encoding: "utf8" });
    expect(apt.stdout).toBe("HTTP='http://127.0.0.1:8082/'\nHTTPS='http://127.0.0.1:8082/'\n");

    expect((await d.netServices(["updates-client", "on"])).code).toBe(0);
    expect(readFileSync(conf, "utf8")).toBe(text);
    expect(await d.netServices(["status"])).toMatchObject({ code: 0, stdout: "updates-proxy off\nupdates-client on\n" });
  });

  it("updates-client off removes the configuration (an AppVM's copy of its template's root), stops the forwarder only when it was on; idempotent", async () => {
    const d = domainRoot("appvm");
    mkdirSync(path.join(d.root, "etc/apt/apt.conf.d"), { recursive: true });
    const conf = path.join(d.root, "etc/apt/apt.conf.d/01qvm-updates-proxy");
    writeFileSync(conf, 'Acquire::http::Proxy "http://127.0.0.1:8082/";\n');
    writeFileSync(path.join(d.root, "etc/apt/apt.conf.d/00other"), "keep\n");
    for (let i = 0; i < 2; i++) expect(await d.netServices(["updates-client", "off"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(existsSync(conf)).toBe(false);
    expect(readFileSync(path.join(d.root, "etc/apt/apt.conf.d/00other"), "utf8")).toBe("keep\n");
    // Off at boot (no flag in /run): nothing of it can run, so no systemctl (boot time).
    expect(d.calls()).toEqual([]);
    expect(await d.netServices(["updates-client", "on"])).toMatchObject({ code: 0 });
    for (let i = 0; i < 2; i++) expect(await d.netServices(["updates-client", "off"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(existsSync(conf)).toBe(false);
    expect(d.calls()).toEqual(["start qvm-updates-proxy-forwarder.socket", "stop qvm-updates-proxy-forwarder.socket", "stop qvm-updates-proxy-forwarder@*.service"]);
  });

  it("updates-proxy on|off keeps the flag qubes.UpdatesProxy reads, and starts or stops tinyproxy's unit", async () => {
    const d = domainRoot("net");
    const flag = path.join(d.root, "run/qvm-service/updates-proxy");
    for (let i = 0; i < 2; i++) expect(await d.netServices(["updates-proxy", "on"])).toMatchObject({ code: 0, stderr: "" });
    expect(existsSync(flag)).toBe(true);
    expect(await d.netServices(["status"])).toMatchObject({ stdout: "updates-proxy on\nupdates-client off\n" });
    for (let i = 0; i < 2; i++) expect(await d.netServices(["updates-proxy", "off"])).toMatchObject({ code: 0, stderr: "" });
    expect(existsSync(flag)).toBe(false);
    expect(d.calls()).toEqual(["start qvm-updates-proxy.service", "start qvm-updates-proxy.service", "stop qvm-updates-proxy.service"]);
  });

  it("the proxy and the client both want 127.0.0.1:8082: one is refused while the other is on", async () => {
    const d = domainRoot("both");
    expect((await d.netServices(["updates-proxy", "on"])).code).toBe(0);
    const r = await d.netServices(["updates-client", "on"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qvm-net-services: updates-client on: this domain runs the updates proxy itself/);
    expect(existsSync(path.join(d.root, "etc/apt/apt.conf.d/01qvm-updates-proxy"))).toBe(false);
    expect((await d.netServices(["updates-proxy", "off"])).code).toBe(0);
    expect((await d.netServices(["updates-client", "on"])).code).toBe(0);
    expect((await d.netServices(["updates-proxy", "on"])).stderr).toMatch(/updates-proxy on: the updates client is on in this domain/);
  });

  it("a failing systemctl is an error on stderr and exit 1; a usage error exits 2", async () => {
    const d = domainRoot("fails");
    const r = await d.netServices(["updates-proxy", "on"], { SYSTEMCTL_RC: "1" });
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toMatch(/cannot start qvm-updates-proxy\.service/);
    for (const args of [[], ["updates-proxy"], ["updates-proxy", "maybe"], ["nope", "on"], ["status", "x"]]) {
      const u = await d.netServices(args);
      expect(u.code).toBe(2);
      expect(u.stderr).toMatch(/^usage: /);
    }
  });
});

describe("qubes.UpdatesProxy", () => {
  it("in a domain whose updates proxy is off: a clear message and exit 1", async () => {
    const d = domainRoot("no-net");
    const r = await runScript(["sh", updatesProxyService], d.env, "GET http://deb.debian.org/ HTTP/1.0\r\n\r\n");
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toMatch(/^qubes\.UpdatesProxy: this domain runs no updates proxy/);
    expect(d.calls()).toEqual([]);
  });
});

/** A process in a new network namespace (loopback up) to enter with nsenter; killed after the tests. */
async function netns(extra: string[][] = []): Promise<number> {
  const holder = spawn("unshare", ["--net", "sleep", "600"], { stdio: "ignore" });
  children.push(holder);
  const pid = holder.pid!;
  // Until unshare has made the new namespace, /proc/PID/ns/net is still ours.
  const ours = readlinkSync("/proc/self/ns/net");
  for (let i = 0; ; i++) {
    let theirs = ours;
    try {
      theirs = readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      // not there yet
    }
    if (theirs !== ours) break;
    if (i > 200) throw new Error("unshare --net made no network namespace");
    await new Promise((r) => setTimeout(r, 10));
  }
  for (const cmd of [["ip", "link", "set", "lo", "up"], ...extra]) {
    const r = spawnSync("nsenter", ["-t", String(pid), "-n", ...cmd], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr}`);
  }
  return pid;
}

function inNs(pid: number, argv: string[], opts: { env?: Record<string, string> } = {}): ChildProcess {
  const child = spawn("nsenter", ["-t", String(pid), "-n", ...argv], { env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return child;
}

async function waitListening(pid: number, addr: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = spawnSync("nsenter", ["-t", String(pid), "-n", "ss", "-Hltn", `src ${addr}`], { encoding: "utf8" });
    if (r.stdout.trim()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${addr}`);
}

function curl(pid: number, args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    const child = inNs(pid, ["curl", "-sS", "--max-time", "30", ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString("latin1")));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Deterministic content of `n` bytes. */
const WEB_SERVER = `
const http = require("node:http");
const body = (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 9)) & 255; return b; };
const big = body(Number(process.env.BIG));
const handler = (req, res) => {
  if (req.url === "/big") { res.writeHead(200, { "content-length": big.length }); res.end(big); }
  else if (req.url === "/headers") { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(req.headers)); }
  else { res.writeHead(200); res.end("hello from the network\\n"); }
};
for (const port of [8080, 443]) http.createServer(handler).listen(port, "192.0.2.1");
`;
const BIG = 6 * 1024 * 1024;
function bigBody(): Buffer {
  const b = Buffer.alloc(BIG);
  for (let i = 0; i < BIG; i++) b[i] = (i * 31 + (i >> 9)) & 255;
  return b;
}

describe("apt's path from a template to the network (needs tinyproxy: Debian's tinyproxy-bin)", () => {
  let template = 0;
  let net = 0;
  let router: QrexecRouter;
  const logs: string[] = [];

  beforeAll(async () => {
    const bundle = path.join(dir, "qvm-qrexec.cjs");
    await build({ entryPoints: [path.join(guestAgent, "src/qrexec/tools/main.ts")], bundle: true, platform: "node", format: "cjs", outfile: bundle, logLevel: "error" });
    template = await netns();
    net = await netns([["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]]);

    // The net domain: the updates proxy on (its flag), tinyproxy with our configuration, the network.
    const netDomain = domainRoot("sys-net");
    mkdirSync(path.join(netDomain.root, "run/qvm-service"), { recursive: true });
    writeFileSync(path.join(netDomain.root, "run/qvm-service/updates-proxy"), "");
    const conf = path.join(dir, "tinyproxy.conf");
    const filter = path.join(guestAgent, "net-services/tinyproxy-updates.filter");
    writeFileSync(conf, readFileSync(path.join(guestAgent, "net-services/tinyproxy-updates.conf"), "utf8").replace("/etc/tinyproxy/qvm-updates-proxy.filter", filter));
    const tinyproxyArgs = execStart("qvm-updates-proxy.service").slice(1).map((a) => (a === "/etc/tinyproxy/qvm-updates-proxy.conf" ? conf : a));
    inNs(net, [process.execPath, "-e", WEB_SERVER], { env: { BIG: String(BIG) } });
    inNs(net, ["tinyproxy", ...tinyproxyArgs]);
    await waitListening(net, "192.0.2.1:8080");
    await waitListening(net, "127.0.0.1:8082");

    const facts = (name: string, cls: DomainFacts["class"]): DomainFacts => ({ name, class: cls, tags: [], templateForDispvms: false, defaultDispvm: "" });
    const host: QrexecHost = {
      facts: () => ({ domains: new Map([["debian-12", facts("debian-12", "TemplateVM")], ["sys-net", facts("sys-net", "AppVM")]]) }),
      // The rules of host-agent/src/qrexec/policy/default-policy.ts.
      loadPolicy: () => parsePolicy("qubes.UpdatesProxy * @type:TemplateVM @default allow target=sys-net\nqubes.UpdatesProxy * @anyvm @anyvm deny\n", "t.policy") as never,
      async open(target, opts) {
        expect([target, opts.inv.service]).toEqual(["sys-net", "qubes.UpdatesProxy"]);
        const child = spawn("nsenter", ["-t", String(net), "-n", "sh", updatesProxyService], {
          env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}`, ...netDomain.env, QREXEC_REMOTE_DOMAIN: opts.inv.source },
          stdio: "pipe",
        });
        return {
          domain: target,
          release: async () => {},
          proc: {
            stdin: child.stdin,
            stdout: child.stdout,
            stderr: child.stderr,
            exit: new Promise((r) => child.once("close", (code, signal) => r({ code, signal }))),
            cancel: () => child.kill("SIGKILL"),
          },
        };
      },
      ask: async () => null,
      log: (m) => logs.push(m),
      called: () => {},
    };
    router = new QrexecRouter(host, { maxCallsPerDomain: 16, requestTimeoutMs: 2000 });
    const sock = path.join(dir, "debian-12.sock_50");
    await router.attach("debian-12", sock);

    // The template: qvm-updates-proxy-forwarder.socket (Accept=yes: the connection is stdin and
    // stdout) running its service's ExecStart, with /usr/bin/qrexec-client-vm the bundle.
    const [prog, ...args] = execStart("qvm-updates-proxy-forwarder@.service");
    expect(prog).toBe("/usr/bin/qrexec-client-vm");
    const socketUnit = readFileSync(path.join(units, "qvm-updates-proxy-forwarder.socket"), "utf8");
    const listen = /^ListenStream=(.*)$/m.exec(socketUnit)![1]!;
    expect(socketUnit).toMatch(/^Accept=yes$/m);
    inNs(template, ["systemd-socket-activate", "--inetd", "--accept", "--listen", listen, `--setenv=QVM_QREXEC_SOCKET=${sock}`, `--setenv=PATH=${process.env.PATH}`, process.execPath, bundle, "qrexec-client-vm", ...args]);
    await waitListening(template, listen);
  }, 60_000);

  afterAll(() => router?.detachAll());

  it("a download through 127.0.0.1:8082 arrives whole", async () => {
    const r = await curl(template, ["-x", "http://127.0.0.1:8082", "http://192.0.2.1:8080/big"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(Buffer.from(r.stdout, "latin1").equals(bigBody())).toBe(true);
  }, 60_000);

  it("apt itself (apt-helper download-file, with the configuration qvm-net-services writes) goes through the proxy", async () => {
    const d = domainRoot("tmpl-apt");
    expect((await d.netServices(["updates-client", "on"])).code).toBe(0);
    const out = path.join(dir, "apt-out");
    mkdirSync(out, { mode: 0o777 });
    chmodSync(out, 0o777);
    const r = await new Promise<Result>((resolve) => {
      const c = inNs(template, ["/usr/lib/apt/apt-helper", "-o", "Debug::Acquire::http=false", "download-file", "http://192.0.2.1:8080/hello", path.join(out, "hello")], {
        env: { APT_CONFIG: path.join(d.root, "etc/apt/apt.conf.d/01qvm-updates-proxy") },
      });
      let stdout = "";
      let stderr = "";
      c.stdout!.on("data", (x: Buffer) => (stdout += x.toString()));
      c.stderr!.on("data", (x: Buffer) => (stderr += x.toString()));
      c.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(readFileSync(path.join(out, "hello"), "utf8")).toBe("hello from the network\n");
    // Without the proxy the template has no way out at all.
    const direct = await curl(template, ["http://192.0.2.1:8080/hello"]);
    expect(direct.code).not.toBe(0);
  }, 60_000);

  it("the proxy adds no Via or X-Tinyproxy header", async () => {
    const r = await curl(template, ["-x", "http://127.0.0.1:8082", "http://192.0.2.1:8080/headers"]);
    expect(r.code).toBe(0);
    const headers = JSON.parse(r.stdout) as Record<string, string>;
    expect(headers.host).toBe("192.0.2.1:8080");
    expect(Object.keys(headers).filter((h) => /^(via|x-tinyproxy|x-forwarded-for|forwarded)$/i.test(h))).toEqual([]);
  });

  it("CONNECT (https sources) reaches port 443 only, and nothing on the net domain itself is reachable", async () => {
    const ok = await curl(template, ["-x", "http://127.0.0.1:8082", "--proxytunnel", "http://192.0.2.1:443/hello"]);
    expect(ok).toMatchObject({ code: 0, stdout: "hello from the network\n" });
    const port = await curl(template, ["-x", "http://127.0.0.1:8082", "--proxytunnel", "http://192.0.2.1:8080/hello"]);
    expect(port.stderr).toMatch(/CONNECT tunnel failed, response 403/);
    for (const url of ["http://127.0.0.1:8082/", "http://localhost:8080/", "http://[::1]:8080/", "http://tinyproxy.stats/", "http://2130706433:8082/"]) {
      const r = await curl(template, ["-x", "http://127.0.0.1:8082", "-o", "/dev/null", "-w", "%{http_code}", url]);
      expect([url, r.stdout]).toEqual([url, "403"]);
    }
  }, 60_000);

  it("the net domain's service starts the proxy when it is on but not running, and waits for its port", async () => {
    const d = domainRoot("sys-net-2");
    const ns = await netns();
    mkdirSync(path.join(d.root, "run/qvm-service"), { recursive: true });
    writeFileSync(path.join(d.root, "run/qvm-service/updates-proxy"), "");
    const child = spawn("nsenter", ["-t", String(ns), "-n", "sh", updatesProxyService], {
      env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}`, ...d.env, SYSTEMCTL_START: "sleep 0.5; exec socat TCP-LISTEN:8082,bind=127.0.0.1,reuseaddr SYSTEM:'echo proxy here'" },
      stdio: "pipe",
    });
    children.push(child);
    let stdout = "";
    child.stdout.on("data", (x: Buffer) => (stdout += x.toString()));
    child.stdin.end();
    const code = await new Promise((r) => child.on("close", r));
    expect([code, stdout]).toEqual([0, "proxy here\n"]);
    expect(d.calls()).toEqual(["is-active --quiet qvm-updates-proxy.service", "start qvm-updates-proxy.service"]);
  }, 30_000);
});
