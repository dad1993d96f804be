// A private "internet" for end-to-end tests of domain networking, so that no test ever reaches the
// real one: two network namespaces joined by a veth pair. The "host" namespace (192.0.2.2, default
// route via 192.0.2.1) is where a test runs qvmd, and with it passt, which needs a default route;
// its /etc/netns resolv.conf names the test DNS server. The "internet" namespace holds a DNS
// server (dnsmasq: example.test, other.test, repo.test and nothing else) and web servers on two
// addresses, so a firewall test can allow one and deny the other; one of them also serves an
// empty flat apt repository. 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed anywhere real.
//
// Needs root (the tests run as root, as qvmd does). Names carry the test process's pid, so a later
// run removes what a crashed one left (its pid no longer runs).
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { execa, execaSync } from "execa";
import { alive, describeProcess, killProcesses, pollUntil } from "./fixtures.js";

/** The addresses of the test internet (TEST-NET-1). */
export const TEST_NET = {
  /** The internet side of the veth pair: the host namespace's gateway. */
  gatewayIp: "192.0.2.1",
  /** The host namespace's only address. */
  hostIp: "192.0.2.2",
  dnsIp: "192.0.2.53",
  /** example.test and repo.test. */
  webIp: "192.0.2.80",
  /** other.test: a second web host, for allow/deny tests. */
  otherIp: "192.0.2.81",
} as const;

/** Every name the test DNS server answers; any other name is NXDOMAIN. */
export const TEST_NAMES: Readonly<Record<string, string>> = {
  "example.test": TEST_NET.webIp,
  "other.test": TEST_NET.otherIp,
  "repo.test": TEST_NET.webIp,
};

/** What GET / answers on each web address, so a test can tell which host it reached. */
export const HOME_PAGES: Readonly<Record<string, string>> = {
  [TEST_NET.webIp]: "qvm test internet: example.test\n",
  [TEST_NET.otherIp]: "qvm test internet: other.test\n",
};

/** The apt source line of the test repository (empty; unsigned, hence trusted=yes). */
export const TEST_APT_SOURCE = "deb [trusted=yes] http://repo.test/debian ./";

/** One request a test web server answered. */
export interface WebRequest {
  /** The server address it arrived on (webIp or otherIp). */
  ip: string;
  port: number;
  /** The client's address as the server saw it (192.0.2.2 for anything from the host namespace). */
  from: string;
  method: string;
  /** Path without the query. */
  path: string;
  host: string;
}

export interface TestInternet extends AsyncDisposable {
  /** Where a test runs qvmd (withDaemon's `netns`). */
  readonly hostNetns: string;
  readonly inetNetns: string;
  readonly dnsIp: string;
  readonly webIp: string;
  readonly otherIp: string;
  /** The self-signed certificate (PEM) that HTTPS on port 443 presents; undefined without openssl. */
  readonly caCert: string | undefined;
  /** `argv` as a command run in the host namespace (`ip netns exec`, so it sees the test resolv.conf). */
  inHost(argv: readonly string[]): [string, ...string[]];
  /** `ip -4 addr` and `ip -4 route` of the host namespace: compare before and after, to see that qvm added nothing. */
  hostAddrs(): Promise<string>;
  /** Every request the web servers answered so far, oldest first. */
  requestLog(): WebRequest[];
  /** How many requests for `urlPath` arrived (on web address `ip` only, if given). */
  requests(urlPath: string, ip?: string): Promise<number>;
}

const PREFIX = "qvmt";
/** A name this fixture made, with the pid of the test process that made it. */
const OWN_NAME = new RegExp(`^${PREFIX}-(?:inet|host)-(\\d+)-\\d+$`);
const OWN_TMP = new RegExp(`^${PREFIX}-inet-(\\d+)-`);
const NETNS_ETC = "/etc/netns";
/** How long a server may take to be ready, and to exit at SIGTERM. */
const READY_MS = 10_000;
const STOP_MS = 5_000;

let made = 0;

/** Makes the test internet; dispose it after the qvmd running in it (`await using` in that order does). */
export async function makeTestInternet(): Promise<TestInternet> {
  await removeStale();
  // The counter alone could repeat: test files share a process, and each evaluates this module anew.
  const existing = await netnsList();
  const name = (side: string, n: number) => `${PREFIX}-${side}-${process.pid}-${n}`;
  while (existing.includes(name("inet", made)) || existing.includes(name("host", made))) made++;
  const inet = new Internet(name("inet", made), name("host", made));
  made++;
  try {
    await inet.setUp();
  } catch (err) {
    await inet[Symbol.asyncDispose]().catch(() => {});
    throw err;
  }
  return inet;
}

/** Runs `ip ARGS`; throws with its stderr. */
async function ip(...args: string[]): Promise<string> {
  return (await execa("ip", args)).stdout;
}

async function netnsList(): Promise<string[]> {
  // "NAME (id: N)" per line; the id only once the namespace has a peer.
  return (await ip("netns", "list")).split("\n").map((l) => l.split(" ")[0]!).filter(Boolean);
}

/** Pids of the processes in named network namespace `name`. */
async function netnsPids(name: string): Promise<number[]> {
  const r = await execa("ip", ["netns", "pids", name], { reject: false });
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** Deletes the namespaces, /etc/netns entries and temporary directories of test runs that no longer run. */
async function removeStale(): Promise<void> {
  const stale = (name: string, re: RegExp) => {
    const pid = re.exec(name)?.[1];
    return pid !== undefined && Number(pid) !== process.pid && !alive(Number(pid));
  };
  for (const name of (await netnsList()).filter((n) => stale(n, OWN_NAME))) {
    await killProcesses(await netnsPids(name));
    await ip("netns", "delete", name);
  }
  if (existsSync(NETNS_ETC)) for (const name of readdirSync(NETNS_ETC).filter((n) => stale(n, OWN_NAME))) rmSync(path.join(NETNS_ETC, name), { recursive: true, force: true });
  for (const name of readdirSync(os.tmpdir()).filter((n) => stale(n, OWN_TMP))) rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
}

/** A server process in a namespace: its output, kept for error messages, and its exit. */
class Server {
  readonly proc: ChildProcess;
  output = "";
  readonly exited: Promise<void>;

  constructor(
    readonly what: string,
    argv: string[],
  ) {
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((r) => this.proc.once("close", () => r()));
    this.proc.once("error", () => {}); // a failed spawn shows as its exit
    const keep = (c: Buffer) => (this.output = (this.output + c.toString()).slice(-4000));
    this.proc.stdout!.on("data", keep);
    this.proc.stderr!.on("data", keep);
  }

  running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined;
  }

  /** Resolves once its output matches `ready`; throws with its output if it exits or stays silent. */
  async whenReady(ready: RegExp): Promise<void> {
    if (!(await pollUntil(() => ready.test(this.output) || !this.running(), READY_MS)) || !ready.test(this.output)) {
      throw new Error(`${this.what} ${this.running() ? `was not ready within ${READY_MS / 1000} s` : "exited"}: ${this.output}`);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within STOP_MS. */
  async stop(): Promise<void> {
    if (!this.running()) return this.exited;
    this.proc.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, STOP_MS)))]);
    clearTimeout(timer);
    if (this.running()) this.proc.kill("SIGKILL");
    await this.exited;
  }
}

class Internet implements TestInternet {
  readonly dnsIp = TEST_NET.dnsIp;
  readonly webIp = TEST_NET.webIp;
  readonly otherIp = TEST_NET.otherIp;
  caCert: string | undefined;
  private readonly servers: Server[] = [];
  private tmp: string | undefined;
  private disposed = false;

  constructor(
    readonly inetNetns: string,
    readonly hostNetns: string,
  ) {}

  private get etcDir(): string {
    return path.join(NETNS_ETC, this.hostNetns);
  }

  private get logFile(): string {
    return path.join(this.tmp!, "requests.jsonl");
  }

  async setUp(): Promise<void> {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), `${this.inetNetns}-`));
    await this.makeNetwork();
    mkdirSync(this.etcDir, { recursive: true });
    writeFileSync(path.join(this.etcDir, "resolv.conf"), `nameserver ${this.dnsIp}\n`);
    const dns = this.serve("dnsmasq", dnsmasqArgs());
    const web = this.serve("test web server", [process.execPath, this.writeWebServer(), path.join(this.tmp, "web.json")]);
    await dns.whenReady(/started, version/);
    await web.whenReady(/^ready$/m);
  }

  /** The two namespaces and the veth pair, made inside them so no name on the machine can clash. */
  private async makeNetwork(): Promise<void> {
    const [i, h] = [this.inetNetns, this.hostNetns];
    await ip("netns", "add", i);
    await ip("netns", "add", h);
    await ip("-n", i, "link", "add", "veth-inet", "type", "veth", "peer", "name", "veth-host", "netns", h);
    await ip("-n", i, "addr", "add", `${TEST_NET.gatewayIp}/24`, "dev", "veth-inet");
    // The service addresses sit on the veth too, so the host namespace reaches them on-link.
    for (const a of [this.dnsIp, this.webIp, this.otherIp]) await ip("-n", i, "addr", "add", `${a}/32`, "dev", "veth-inet");
    await ip("-n", h, "addr", "add", `${TEST_NET.hostIp}/24`, "dev", "veth-host");
    for (const [ns, dev] of [[i, "lo"], [i, "veth-inet"], [h, "lo"], [h, "veth-host"]] as const) await ip("-n", ns, "link", "set", dev, "up");
    await ip("-n", h, "route", "add", "default", "via", TEST_NET.gatewayIp);
  }

  private serve(what: string, argv: string[]): Server {
    const s = new Server(what, ["ip", "netns", "exec", this.inetNetns, ...argv]);
    this.servers.push(s);
    return s;
  }

  /** Writes the web server, its configuration, the apt repository and (with openssl) a certificate; returns the script. */
  private writeWebServer(): string {
    const tmp = this.tmp!;
    writeAptRepo(path.join(tmp, "www", "debian"));
    this.caCert = makeCertificate(tmp);
    const config = {
      root: path.join(tmp, "www"),
      log: this.logFile,
      pages: HOME_PAGES,
      http: [this.webIp, this.otherIp],
      https: this.caCert ? { ips: [this.webIp, this.otherIp], cert: this.caCert, key: path.join(tmp, "key.pem") } : undefined,
    };
    writeFileSync(path.join(tmp, "web.json"), JSON.stringify(config));
    writeFileSync(path.join(tmp, "web-server.mjs"), WEB_SERVER);
    return path.join(tmp, "web-server.mjs");
  }

  inHost(argv: readonly string[]): [string, ...string[]] {
    return ["ip", "netns", "exec", this.hostNetns, ...argv];
  }

  async hostAddrs(): Promise<string> {
    return `${await ip("-n", this.hostNetns, "-4", "addr", "show")}\n${await ip("-n", this.hostNetns, "-4", "route", "show")}\n`;
  }

  requestLog(): WebRequest[] {
    if (!this.tmp || !existsSync(this.logFile)) return [];
    return readFileSync(this.logFile, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as WebRequest);
  }

  async requests(urlPath: string, ip?: string): Promise<number> {
    return this.requestLog().filter((r) => r.path === urlPath && (ip === undefined || r.ip === ip)).length;
  }

  /**
   * Stops the servers, kills anything else still running in either namespace (a test's leak),
   * deletes the namespaces (with them the veth pair), the /etc/netns entry and the files. Throws
   * naming what it found left, after removing it.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const problems: string[] = [];
    await Promise.all(this.servers.map((s) => s.stop()));
    const names = await netnsList();
    for (const ns of [this.hostNetns, this.inetNetns].filter((n) => names.includes(n))) {
      const left = await netnsPids(ns);
      if (left.length) {
        problems.push(`processes still running in ${ns}: ${left.map(describeProcess).join(", ")} (killed)`);
        await killProcesses(left);
      }
      await ip("netns", "delete", ns).catch((err: Error) => problems.push(`${ns} not deleted: ${err.message}`));
    }
    rmSync(this.etcDir, { recursive: true, force: true });
    try {
      rmdirSync(NETNS_ETC); // only if no other namespace has files there
    } catch {
      // not empty, or already gone
    }
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
    const still = (await netnsList()).filter((n) => n === this.hostNetns || n === this.inetNetns);
    if (still.length) problems.push(`namespaces left: ${still.join(", ")}`);
    if (problems.length) throw new Error(`test internet ${this.inetNetns}: ${problems.join("; ")}`);
  }
}

/**
 * dnsmasq answering only TEST_NAMES, on the DNS address only: no /etc/dnsmasq.conf, /etc/hosts or
 * /etc/resolv.conf, no upstream servers (so it forwards nowhere: `/#/` makes every other name
 * NXDOMAIN), no pid file, logging to stderr.
 */
function dnsmasqArgs(): string[] {
  return [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--pid-file=",
    "--log-facility=-",
    `--listen-address=${TEST_NET.dnsIp}`,
    "--bind-interfaces",
    ...Object.entries(TEST_NAMES).map(([name, addr]) => `--address=/${name}/${addr}`),
    "--address=/#/",
  ];
}

/**
 * An empty flat repository (`deb URL ./`): apt reads Release (no InRelease or signature: the
 * source is trusted=yes) and then the index it lists.
 */
function writeAptRepo(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const files: Record<string, Buffer> = { Packages: Buffer.alloc(0), "Packages.gz": gzipSync(Buffer.alloc(0)) };
  for (const [name, data] of Object.entries(files)) writeFileSync(path.join(dir, name), data);
  const sums = (algo: string) => Object.entries(files).map(([name, data]) => ` ${createHash(algo).update(data).digest("hex")} ${data.length} ${name}`);
  // apt warns about a Release without a Date.
  const release = ["Origin: qvm-test", "Label: qvm-test", "Suite: qvm-test", "Codename: qvm-test", `Date: ${new Date().toUTCString()}`, "Architectures: all amd64 arm64", "MD5Sum:", ...sums("md5"), "SHA256:", ...sums("sha256")];
  writeFileSync(path.join(dir, "Release"), `${release.join("\n")}\n`);
}

/** A self-signed certificate for the test names and web addresses; undefined if openssl is missing or fails. */
function makeCertificate(dir: string): string | undefined {
  const cert = path.join(dir, "cert.pem");
  const san = [...Object.keys(TEST_NAMES).map((n) => `DNS:${n}`), `IP:${TEST_NET.webIp}`, `IP:${TEST_NET.otherIp}`].join(",");
  const r = execaSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", cert, "-days", "2", "-subj", "/CN=qvm test internet", "-addext", `subjectAltName=${san}`],
    { reject: false },
  );
  return r.exitCode === 0 ? cert : undefined;
}

/**
 * The web server, run by node in the internet namespace (a file of its own there: the test process
 * cannot enter a namespace). Logs each request as a JSON line before answering it, so a client that
 * got its answer finds its request in the log.
 */
const WEB_SERVER = String.raw`
import { appendFileSync, readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));

function handle(req, res) {
  const ip = req.socket.localAddress.replace(/^::ffff:/, "");
  const url = new URL(req.url, "http://x");
  const from = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
  appendFileSync(config.log, JSON.stringify({ ip, port: req.socket.localPort, from, method: req.method, path: url.pathname, host: req.headers.host ?? "" }) + "\n");
  const send = (code, body) => {
    res.writeHead(code, { "content-type": "text/plain", "content-length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  };
  if (url.pathname === "/") return send(200, Buffer.from(config.pages[ip] ?? "qvm test internet\n"));
  if (url.pathname === "/hello") return send(200, Buffer.from("hello\n"));
  // /bytes/N: N zero bytes (at most 1 GiB), streamed, for throughput benchmarks.
  const bytes = /^\/bytes\/(\d{1,10})$/.exec(url.pathname);
  if (bytes && Number(bytes[1]) <= 1 << 30) {
    let left = Number(bytes[1]);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": left });
    const chunk = Buffer.alloc(64 * 1024);
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return res.once("drain", pump);
      }
      res.end();
    };
    return pump();
  }
  if (url.pathname.startsWith("/debian/")) {
    const file = path.join(config.root, path.normalize(url.pathname));
    if (file.startsWith(config.root + "/")) {
      try {
        return send(200, readFileSync(file));
      } catch {}
    }
  }
  send(404, Buffer.from("not found\n"));
}

const listening = [];
const listen = (server, ip, port) => listening.push(new Promise((ok, fail) => server.once("error", fail).listen(port, ip, ok)));
for (const ip of config.http) listen(http.createServer(handle), ip, 80);
if (config.https) {
  const tls = { cert: readFileSync(config.https.cert), key: readFileSync(config.https.key) };
  for (const ip of config.https.ips) listen(https.createServer(tls, handle), ip, 443);
}
await Promise.all(listening);
process.stdout.write("ready\n");
`;
