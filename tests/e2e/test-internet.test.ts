// The test internet itself, without VMs: names resolve and pages load from its host namespace
// exactly as a qvmd (and passt) started there would see them, apt accepts its repository, and
// disposing it, or a later run after a crash, leaves no namespace, file or process behind.
// In the e2e project (the unit project covers only the packages' src/); takes a few seconds.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { alive, pollUntil } from "./fixtures.js";
import { HOME_PAGES, TEST_APT_SOURCE, TEST_NET, makeTestInternet, type TestInternet } from "./test-internet.js";

let inet: TestInternet;
beforeAll(async () => {
  inet = await makeTestInternet();
});
afterAll(async () => {
  await inet?.[Symbol.asyncDispose]();
});

/** Runs `argv` in the host namespace; never rejects. */
function inHost(argv: readonly string[], env: Record<string, string> = {}) {
  const [file, ...args] = inet.inHost(argv);
  return execa(file, args, { reject: false, env, stripFinalNewline: false });
}

/** GETs `url` from the host namespace with Node's fetch (curl is not among the packages qvm installs). */
function fetchInHost(url: string, env: Record<string, string> = {}) {
  const script = "const r = await fetch(process.argv[1]); process.stdout.write(`${r.status} ${await r.text()}`);";
  return inHost([process.execPath, "--input-type=module", "-e", script, url], env);
}

async function netnsNames(): Promise<string[]> {
  return (await execa("ip", ["netns", "list"])).stdout.split("\n").map((l) => l.split(" ")[0]!);
}

describe("test internet", () => {
  it("resolves the test names, and no other name, in the host namespace", async () => {
    for (const [name, addr] of [["example.test", TEST_NET.webIp], ["other.test", TEST_NET.otherIp], ["repo.test", TEST_NET.webIp]]) {
      const r = await inHost(["getent", "ahostsv4", name!]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout.split("\n")[0]).toMatch(new RegExp(`^${addr!.replaceAll(".", "\\.")}\\s`));
    }
    // Not found, and not forwarded: dnsmasq has no upstream server.
    for (const name of ["unknown.test", "debian.org"]) expect((await inHost(["getent", "hosts", name])).exitCode).toBe(2);
  });

  it("serves each web host's page, and logs each request with the host namespace as its source", async () => {
    const before = await inet.requests("/", inet.otherIp);
    expect((await fetchInHost("http://example.test/")).stdout).toBe(`200 ${HOME_PAGES[TEST_NET.webIp]}`);
    expect((await fetchInHost("http://other.test/")).stdout).toBe(`200 ${HOME_PAGES[TEST_NET.otherIp]}`);
    expect((await fetchInHost("http://example.test/nothing")).stdout).toMatch(/^404 /);
    expect(await inet.requests("/", inet.otherIp)).toBe(before + 1);
    expect(inet.requestLog().filter((r) => r.path === "/nothing")).toEqual([{ ip: TEST_NET.webIp, port: 80, from: TEST_NET.hostIp, method: "GET", path: "/nothing", host: "example.test" }]);
  });

  it("serves HTTPS with a certificate the test can trust (when openssl is installed)", async () => {
    if (!inet.caCert) return; // openssl missing: the fixture offers plain HTTP only
    const r = await fetchInHost("https://other.test/hello", { NODE_EXTRA_CA_CERTS: inet.caCert });
    expect(r.stdout, r.stderr).toBe("200 hello\n");
    expect(await inet.requests("/hello", inet.otherIp)).toBeGreaterThanOrEqual(1);
  });

  it("offers a flat apt repository that apt-get update accepts", async () => {
    // A private apt configuration: none of the machine's sources, settings (proxies) or lists.
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-apt-test-"));
    try {
      for (const d of ["parts", "source-parts", "lists/partial", "cache/archives/partial"]) mkdirSync(path.join(dir, d), { recursive: true });
      writeFileSync(path.join(dir, "sources.list"), `${TEST_APT_SOURCE}\n`);
      writeFileSync(path.join(dir, "status"), "");
      const conf = [
        `Dir::Etc::Main "/dev/null";`,
        `Dir::Etc::Parts "${dir}/parts";`,
        `Dir::Etc::SourceList "${dir}/sources.list";`,
        `Dir::Etc::SourceParts "${dir}/source-parts";`,
        `Dir::State::Lists "${dir}/lists";`,
        `Dir::State::status "${dir}/status";`,
        `Dir::Cache "${dir}/cache";`,
        // Root may write the private lists directory; apt's _apt user may not.
        `APT::Sandbox::User "root";`,
      ];
      writeFileSync(path.join(dir, "apt.conf"), `${conf.join("\n")}\n`);
      const r = await inHost(["apt-get", "update"], { APT_CONFIG: path.join(dir, "apt.conf") });
      expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/^(W|E|Err):/m);
      expect(await inet.requests("/debian/Release", inet.webIp)).toBeGreaterThanOrEqual(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("gives the host namespace one address and a default route into the test internet", async () => {
    const addrs = await inet.hostAddrs();
    expect(addrs).toContain(`inet ${TEST_NET.hostIp}/24`);
    expect(addrs).toContain(`default via ${TEST_NET.gatewayIp}`);
    expect(addrs.match(/ inet /g)).toHaveLength(2); // 127.0.0.1 and 192.0.2.2
  });

  it("leaves no namespace, file or process behind when disposed", async () => {
    const other = await makeTestInternet();
    const pids = (await Promise.all([other.inetNetns, other.hostNetns].map((ns) => execa("ip", ["netns", "pids", ns]))))
      .flatMap((r) => r.stdout.split("\n"))
      .filter(Boolean)
      .map(Number);
    expect(pids.length).toBeGreaterThanOrEqual(2); // dnsmasq and the web server
    await other[Symbol.asyncDispose]();
    const names = await netnsNames();
    expect(names).not.toContain(other.inetNetns);
    expect(names).not.toContain(other.hostNetns);
    expect(existsSync(`/etc/netns/${other.hostNetns}`)).toBe(false);
    expect(readdirSync(os.tmpdir()).filter((n) => n.startsWith(`${other.inetNetns}-`))).toEqual([]);
    expect(await pollUntil(() => !pids.some(alive), 5_000)).toBe(true);
  });

  it("removes what a crashed run left: its namespaces, their processes, /etc/netns entry and files", async () => {
    const gone = spawn("true");
    await new Promise((r) => gone.once("exit", r));
    const [i, h] = [`qvmt-inet-${gone.pid}-0`, `qvmt-host-${gone.pid}-0`];
    await execa("ip", ["netns", "add", i]);
    await execa("ip", ["netns", "add", h]);
    mkdirSync(`/etc/netns/${h}`, { recursive: true });
    writeFileSync(`/etc/netns/${h}/resolv.conf`, "nameserver 192.0.2.53\n");
    const tmp = mkdtempSync(path.join(os.tmpdir(), `${i}-`));
    const orphan = spawn("ip", ["netns", "exec", i, "sleep", "600"], { stdio: "ignore", detached: true });
    orphan.unref();
    // Running sleep means `ip netns exec` has entered the namespace.
    await pollUntil(() => readFileSync(`/proc/${orphan.pid}/comm`, "utf8") === "sleep\n", 5_000);

    await using fresh = await makeTestInternet();
    expect(fresh.hostNetns).not.toBe(h);
    const names = await netnsNames();
    expect(names).not.toContain(i);
    expect(names).not.toContain(h);
    expect(existsSync(`/etc/netns/${h}`)).toBe(false);
    expect(existsSync(tmp)).toBe(false);
    expect(await pollUntil(() => !alive(orphan.pid!), 5_000)).toBe(true);
  });
});
