// The in-domain tools as built (one bundle) against the real router over a Unix socket
// (QVM_QREXEC_SOCKET stands in for vsock); services run as local processes of the same bundle
// with the environment qvmd would give them. The VM path is tests/e2e/qrexec.test.ts.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, lstatSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QrexecRouter, parsePolicy, type DomainFacts, type QrexecHost } from "@qvm/host-agent";

let dir = "";
let bundle = "";
let router: QrexecRouter;
let policy = "";
const logs: string[] = [];
const homes: Record<string, string> = {};

const facts = (name: string): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "" });

function run(args: string[], env: Record<string, string> = {}, stdin = ""): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bundle, ...args], { env: { ...process.env, ...env }, stdio: "pipe" });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(stdin);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-qrexec-tools-"));
  bundle = path.join(dir, "qvm-qrexec.cjs");
  await build({ entryPoints: [path.join(import.meta.dirname, "main.ts")], bundle: true, platform: "node", format: "cjs", outfile: bundle, logLevel: "error" });
  for (const d of ["work", "vault"]) {
    homes[d] = path.join(dir, `home-${d}`);
    mkdirSync(homes[d]!);
  }
  const host: QrexecHost = {
    facts: () => ({ domains: new Map(["work", "vault"].map((n) => [n, facts(n)])) }),
    loadPolicy: () => parsePolicy(policy, "t.policy") as never,
    async open(target, opts) {
      const tool = { "qubes.Filecopy": ["filecopy-receive"], "test.Cat": [] }[opts.inv.service];
      const child =
        tool && tool.length
          ? spawn(process.execPath, [bundle, ...tool], { env: { ...process.env, HOME: homes[target]!, QREXEC_REMOTE_DOMAIN: opts.inv.source }, stdio: "pipe" })
          : spawn("sh", ["-c", tool ? 'while read -r l; do echo "$l" | tr a-z A-Z; done' : "exit 127"], { stdio: "pipe" });
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
  router = new QrexecRouter(host, { maxCallsPerDomain: 4, requestTimeoutMs: 2000 });
  await router.attach("work", path.join(dir, "work.sock_50"));
});

afterAll(() => {
  router?.detachAll();
  rmSync(dir, { recursive: true, force: true });
});

const asWork = { QVM_QREXEC_SOCKET: () => path.join(dir, "work.sock_50") };
const env = () => ({ QVM_QREXEC_SOCKET: asWork.QVM_QREXEC_SOCKET() });

/** Every entry under `root`: relative name, type, mode, contents or link target. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const p = path.join(root, rel);
    const st = lstatSync(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out.push(`${rel} link ${readlinkSync(p)}`);
    else if (st.isDirectory()) {
      out.push(`${rel} dir ${mode}`);
      for (const n of readdirSync(p).sort()) walk(path.join(rel, n));
    } else out.push(`${rel} file ${mode} ${readFileSync(p).toString("base64")}`);
  };
  walk(path.basename(root) === "" ? "." : "");
  return out;
}

describe("in-domain qrexec tools", () => {
  it("qvm-copy-to-vm lands a tree in ~/QubesIncoming/<source>/ byte for byte, modes and symlinks kept", async () => {
    policy = "qubes.Filecopy * work vault allow\n";
    const src = path.join(dir, "src", "tree");
    mkdirSync(path.join(src, "sub", "deep"), { recursive: true });
    writeFileSync(path.join(src, "a.txt"), "hello\n");
    writeFileSync(path.join(src, "sub", "run.sh"), "#!/bin/sh\necho hi\n");
    chmodSync(path.join(src, "sub", "run.sh"), 0o750);
    writeFileSync(path.join(src, "sub", "deep", "bin"), Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7) % 256)));
    symlinkSync("../a.txt", path.join(src, "sub", "link"));
    const r = await run(["qvm-copy-to-vm", "vault", src], env());
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(snapshot(path.join(homes.vault!, "QubesIncoming", "work", "tree"))).toEqual(snapshot(src));
  });

  it("qvm-move-to-vm removes the files only after the copy succeeded", async () => {
    const f = path.join(dir, "src", "moved.txt");
    writeFileSync(f, "bye\n");
    expect((await run(["qvm-move-to-vm", "vault", f], env())).code).toBe(0);
    expect(existsSync(f)).toBe(false);
    expect(readFileSync(path.join(homes.vault!, "QubesIncoming", "work", "moved.txt"), "utf8")).toBe("bye\n");
    // A second copy of the same name is refused by the receiver (no overwrite): the file stays here.
    writeFileSync(f, "again\n");
    const again = await run(["qvm-move-to-vm", "vault", f], env());
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/the copy failed in the target: .*exists/i);
    expect(existsSync(f)).toBe(true);
  });

  it("a refused copy exits 126 and keeps the files", async () => {
    policy = "qubes.Filecopy * work vault deny\n";
    const f = path.join(dir, "src", "kept.txt");
    writeFileSync(f, "x");
    const r = await run(["qvm-move-to-vm", "vault", f], env());
    expect(r.code).toBe(126);
    expect(r.stderr).toMatch(/refused/);
    expect(existsSync(f)).toBe(true);
  });

  it("qrexec-client-vm passes stdin and stdout, returns the service's exit code, and says 'Request refused'", async () => {
    policy = "test.Cat * work vault allow\ntest.Missing * work vault allow\n";
    expect(await run(["qrexec-client-vm", "vault", "test.Cat"], env(), "shout\n")).toMatchObject({ code: 0, stdout: "SHOUT\n" });
    expect((await run(["qrexec-client-vm", "vault", "test.Missing"], env())).code).toBe(127);
    expect(await run(["qrexec-client-vm", "vault", "test.Denied"], env())).toMatchObject({ code: 126, stderr: "Request refused\n" });
  });

  it("qrexec-client-vm with a local program connects the program to the service", async () => {
    policy = "test.Cat * work vault allow\n";
    const r = await run(["qrexec-client-vm", "vault", "test.Cat", "/bin/sh", "-c", "echo ping; read reply; echo \"got $reply\" >&2; exit 4"], env());
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("got PING");
  });

  it("qubes.OpenURL opens only http, https and ftp; qvm-open-in-vm refuses other schemes before calling", async () => {
    const opened = path.join(dir, "opened.txt");
    const opener = path.join(dir, "opener.sh");
    writeFileSync(opener, `#!/bin/sh\nprintf '%s' "$1" > '${opened}'\n`, { mode: 0o755 });
    for (const [url, code] of [["https://example.org/x", 0], ["ftp://example.org/f", 0], ["file:///etc/passwd", 1], ["smb://h/s", 1], ["x-handler://a", 1]] as const) {
      rmSync(opened, { force: true });
      const r = await run(["open-receive", "url"], { QVM_OPENER: opener }, `${url}\n`);
      expect(r.code, url).toBe(code);
      if (code === 0) expect(readFileSync(opened, "utf8")).toBe(url);
      else {
        expect(r.stderr).toMatch(/^qubes\.OpenURL: \S+: URLs are not opened in another domain/);
        expect(existsSync(opened)).toBe(false);
      }
    }
    const early = await run(["qvm-open-in-vm", "vault", "file:///etc/passwd"], { QVM_QREXEC_SOCKET: path.join(dir, "nowhere.sock") });
    expect(early).toMatchObject({ code: 1, stderr: "qvm-open-in-vm: file: URLs are not opened in another domain (only http, https, ftp)\n" });
  });

  it("qubes.OpenInVM streams the file to a private temp file and hands it to the opener", async () => {
    const opened = path.join(dir, "opened-file.txt");
    const opener = path.join(dir, "opener-file.sh");
    writeFileSync(opener, `#!/bin/sh\ncat "$1" > '${opened}'\n`, { mode: 0o755 });
    const r = await run(["open-receive"], { QVM_OPENER: opener, TMPDIR: dir }, "note.txt\nline one\nline two\n");
    expect(r.code).toBe(0);
    expect(readFileSync(opened, "utf8")).toBe("line one\nline two\n");
  });

  it("qvm-copy refuses a local file whose name the receiver would refuse, and ends the call (no hang)", async () => {
    policy = "qubes.Filecopy * work vault allow\n";
    const f = path.join(dir, "src", "invoice\u202Efdp.exe");
    mkdirSync(path.dirname(f), { recursive: true });
    writeFileSync(f, "x");
    const r = await run(["qvm-copy-to-vm", "vault", f], env());
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/contains U\+202E/);
    expect(r.stderr).not.toContain("\u202E");
    expect(existsSync(path.join(homes.vault!, "QubesIncoming", "work", "invoice\u202Efdp.exe"))).toBe(false);
  });

  it("tools explain themselves and reject bad usage with exit 2", async () => {
    expect((await run(["qvm-copy", "--help"])).stdout).toMatch(/QubesIncoming/);
    expect((await run(["qvm-copy-to-vm", "vault"])).code).toBe(2);
    expect((await run(["nosuch"])).code).toBe(2);
    expect((await run(["qvm-copy", path.join(dir, "nothere")], env())).stderr).toMatch(/no such file/);
  });
});
