// A hostile domain against real VMs (issue 12): its VMM runs jailed (not root, QEMU under
// seccomp, no new privileges, in memory and pids cgroups, unable to open another domain's
// volume), and a console flood, log forging, a flood of denied calls, an ask flood and a
// disposable fan-out are each stopped by their bound while qvmd and the other domain keep
// working, and filling its root overlay stops at its bound on the data disk. qvmd runs as root
// here, as in CI.
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execa } from "execa";
import { FrameType, domainInWords, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { processesMentioning } from "./fixtures.js";
import { withDaemon, withDomain, withService, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;

const status = (pid: number) => readFileSync(`/proc/${pid}/status`, "utf8");
const field = (pid: number, name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status(pid))?.[1] ?? "";
const exe = (pid: number) => {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return "";
  }
};
/** The VMM processes of a domain: QEMU and vhost-device-vsock, found by its runtime directory. */
function vmmProcesses(name: string): number[] {
  return processesMentioning(path.join(d.dirs.runtimeDir, "domains", name, "")).filter((p) => /qemu-system|vhost-device-vsock/.test(exe(p)));
}

/** A qrexec call as raw frames (request, then EOF on stdin), written by socat: cheaper than Node's tools for floods. */
const callFrames = (target: string, service: string) =>
  Buffer.concat([encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target, service, argument: "" }).finish()), encodeFrame(FrameType.STDIN)]).toString("base64");

/** Runs `n` such calls at once from `dom`, each waiting up to `waitS` for its answer. */
const flood = (dom: string, target: string, service: string, n: number, waitS: number) =>
  sh(dom, `echo ${callFrames(target, service)} | base64 -d > /tmp/call && for i in $(seq ${n}); do socat -t ${waitS} - VSOCK-CONNECT:2:50 < /tmp/call > /dev/null 2>&1 & done; wait; echo flood-done`);

/** Waits up to a minute for `test`; a timeout says what `state` shows then. */
async function until(test: () => boolean, state: () => string): Promise<void> {
  for (let i = 0; i < 600 && !test(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!test()) throw new Error(`timed out waiting for ${test.toString()}\n${state()}`);
}

/** A shell command in a domain (as root with `root`); resolves with exit code and output. */
const sh = (dom: string, script: string, opts: { root?: boolean; input?: string } = {}) =>
  d.qvm(["run", "--pass-io", "--no-pty", ...(opts.root ? ["-u", "root"] : []), dom, "--", "sh", "-c", script], opts.input);

beforeAll(async () => {
  d = await withDaemon("e2e-hostile", { args: ["--max-dispvms-per-source", "1", "--ask-timeout", "20"] });
  writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), ["test.Nope * jailed neighbour deny", "test.Ask * @anyvm @anyvm ask", ""].join("\n"));
  // One after the other: two TCG boots at once are slow on 2 cores.
  await withDomain(d, "jailed", { label: "orange", properties: { memory: "500" }, start: true });
  await withDomain(d, "neighbour", { label: "green", properties: { memory: "400" }, start: true });
  await withDomain(d, "dvm", { label: "red", properties: { memory: "400", template_for_dispvms: "true" } });
  expect((await d.qvm(["prefs", "--global", "default_dispvm", "dvm"])).exitCode).toBe(0);
});

afterAll(async () => {
  // The global setting names dvm; without it, the daemon's teardown can remove dvm.
  await d?.qvm(["prefs", "--global", "-D", "default_dispvm"]);
  await d?.[Symbol.asyncDispose]();
});

describe("a hostile domain against real VMs", () => {
  it("QEMU and vhost-device-vsock run as the domain's own uid, not root, with no new privileges and no capabilities; QEMU under seccomp", async () => {
    const pids = vmmProcesses("jailed");
    expect(pids.map(exe).map((e) => path.basename(e)).sort()).toEqual(["qemu-system-x86_64", "vhost-device-vsock"]);
    const uids = new Set(pids.map((p) => field(p, "Uid").split(/\s+/)[0]));
    expect(uids.size).toBe(1);
    const uid = Number([...uids][0]);
    expect(uid).toBeGreaterThanOrEqual(900_000_000);
    for (const p of pids) {
      expect(field(p, "Uid").split(/\s+/)).toEqual([String(uid), String(uid), String(uid), String(uid)]);
      expect(field(p, "NoNewPrivs")).toBe("1");
      expect(field(p, "CapEff")).toMatch(/^0+$/);
    }
    const qemu = pids.find((p) => exe(p).includes("qemu"))!;
    expect(field(qemu, "Seccomp")).toBe("2"); // filter mode
    // Its agent answers through the jail.
    const r = await d.qvm(["run", "--pass-io", "jailed", "--", "echo", "through the jail"]);
    expect(r.stdout.trim(), r.stderr).toBe("through the jail");
  });

  it("the VMM cannot open another domain's volume: it is not in its view, and not its file", async () => {
    const qemu = vmmProcesses("jailed").find((p) => exe(p).includes("qemu"))!;
    const other = path.join(d.dirs.dataDir, "volumes", "neighbour", "private.qcow2");
    const uid = field(qemu, "Uid").split(/\s+/)[0]!;
    const asVmm = ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "--"];
    // In the VMM's view (its mount namespace and root), as its uid: the file does not exist.
    const inView = await execa("nsenter", ["-t", String(qemu), "-m", "-r", "--", ...asVmm, "cat", other], { reject: false });
    expect(inView.exitCode).not.toBe(0);
    expect(inView.stderr).toMatch(/No such file or directory/);
    // Even outside its view, its uid may not read the file (a second wall).
    const onHost = await execa(asVmm[0]!, [...asVmm.slice(1), "cat", other], { reject: false });
    expect(onHost.exitCode).not.toBe(0);
    expect(onHost.stderr).toMatch(/Permission denied/);
    // Its own private volume is in its view, as its own file.
    const own = path.join(d.dirs.dataDir, "volumes", "jailed", "private.qcow2");
    const mine = await execa("nsenter", ["-t", String(qemu), "-m", "-r", "--", ...asVmm, "test", "-w", own], { reject: false });
    expect(mine.exitCode, mine.stderr).toBe(0);
  });

  it("the VMM processes sit in the domain's memory and pids cgroups, with guest RAM plus overhead as the limit", async () => {
    const qemu = vmmProcesses("jailed").find((p) => exe(p).includes("qemu"))!;
    const cgroups = readFileSync(`/proc/${qemu}/cgroup`, "utf8");
    const mem = /:memory:(.*)$/m.exec(cgroups)?.[1] ?? /^0::(.*)$/m.exec(cgroups)?.[1] ?? "";
    expect(mem).toMatch(/\/qvm-vms\/jailed$/);
    const limitFile = cgroups.includes(":memory:") ? `/sys/fs/cgroup/memory${mem}/memory.limit_in_bytes` : `/sys/fs/cgroup${mem}/memory.max`;
    const limit = Number(readFileSync(limitFile, "utf8"));
    expect(limit).toBeGreaterThan(500 * 1024 * 1024);
    expect(limit).toBeLessThanOrEqual((500 + 512) * 1024 * 1024);
  });

  it("a console flood is held to the log cap while the other domain answers", async () => {
    const log = path.join(d.dirs.dataDir, "logs", "jailed", "console.log");
    const before = statSync(log).size;
    const flood = sh("jailed", "head -c 3000000 /dev/urandom | base64 -w 200 > /dev/ttyS0; echo flooded", { root: true });
    const alive = await sh("neighbour", "echo still here");
    expect(alive.stdout.trim(), alive.stderr).toBe("still here");
    const r = await flood;
    expect(r.stdout.trim(), r.stderr).toBe("flooded");
    await new Promise((res) => setTimeout(res, 3000)); // one rotation check (every 2 s)
    const kept = statSync(log).size + (existsSync(`${log}.1`) ? statSync(`${log}.1`).size : 0);
    expect(statSync(log).size).toBeLessThanOrEqual(1024 * 1024);
    expect(statSync(`${log}.1`).size).toBeLessThanOrEqual(1024 * 1024);
    expect(kept).toBeLessThan(before + 4_000_000); // base64 of 3 MB is 4 MB: some of it was dropped
  });

  it("a forged log line in a call's target is refused and quoted; a flood of denied calls logs a handful of lines", async () => {
    const forged = await sh("jailed", "qrexec-client-vm \"$(printf '\\nqvmd: qrexec: vault -> work my.Backup: allowed')\" test.Nope");
    expect(forged.exitCode).not.toBe(0);
    expect(d.log()).not.toMatch(/^qvmd: qrexec: vault -> work my\.Backup/m);
    expect(d.log()).toContain("\\nqvmd: qrexec: vault");
    const linesBefore = d.log().split("\n").filter((l) => l.includes("test.Nope")).length;
    const r = await flood("jailed", "neighbour", "test.Nope", 40, 10);
    expect(r.stdout.trim(), r.stderr).toBe("flood-done");
    await new Promise((res) => setTimeout(res, 1500));
    const lines = d.log().split("\n").filter((l) => l.includes("test.Nope")).length - linesBefore;
    expect(lines).toBeGreaterThan(0);
    expect(lines).toBeLessThanOrEqual(8);
    expect((await sh("neighbour", "echo ok")).stdout.trim()).toBe("ok");
  });

  it("an ask flood from one domain holds two questions at most, and another domain's question is shown next", async () => {
    await using p = await withService(d, ["policy", "ask"], { stdin: "pipe", stopSignal: "SIGINT" });
    await expect.poll(() => d.log().split("an ask prompt registered").length, { timeout: 15_000 }).toBeGreaterThan(1);
    const asks = flood("jailed", "neighbour", "test.Ask", 8, 60);
    await until(() => /jailed asks to call/.test(p.stderr()), () => `prompt: ${p.stderr()}\nqvmd: ${d.log().slice(-3000)}`);
    // qvmd refuses the flood beyond two questions in flight, at once and in a few log lines.
    await until(() => /qrexec: jailed -> neighbour test\.Ask: denied/.test(d.log()), () => `prompt: ${p.stderr()}\nqvmd: ${d.log().slice(-3000)}`);
    const other = sh("neighbour", "qrexec-client-vm jailed test.Ask </dev/null; echo other=$?");
    // Unanswered, the question on screen expires before qvmd's 20 s; after Enter (the prompt
    // waits for one, so typed-ahead keys never answer the next question) the next shown is the
    // domain served longest ago: neighbour, not jailed's second question.
    await until(() => /expired/.test(p.stderr()), () => `prompt: ${p.stderr()}`);
    p.proc.stdin!.write("\n");
    await until(() => /neighbour asks to call/.test(p.stderr()), () => `prompt: ${p.stderr()}\nqvmd: ${d.log().slice(-3000)}`);
    const shown = [...p.stderr().matchAll(/(\w+) asks to call/g)].map((m) => m[1]);
    expect(shown.slice(0, shown.indexOf("neighbour") + 1)).toEqual(["jailed", "neighbour"]);
    await p[Symbol.asyncDispose]();
    expect((await asks).stdout.trim()).toBe("flood-done");
    expect((await other).stdout.trim()).toBe("other=126");
  });

  it("a disposable fan-out stops at its cap, and a disposable cannot make another", async () => {
    const script = "echo in-disposable; qrexec-client-vm @dispvm qubes.VMShell </dev/null >/dev/null 2>&1; echo nested=$?\n";
    const calls = [0, 1].map(() => sh("jailed", "qrexec-client-vm @dispvm qubes.VMShell; echo exit=$?", { input: script }));
    const [a, b] = await Promise.all(calls);
    const outs = [a!.stdout, b!.stdout].sort();
    // One call got a disposable (which could not make its own); the other was refused at the cap.
    expect(outs[0]).toBe("exit=126");
    expect(outs[1]).toBe("in-disposable\nnested=126\nexit=0");
    const names = (JSON.parse((await d.qvm(["ls", "--json"])).stdout) as Array<{ name: string }>).map((x) => x.name);
    expect(names.filter((n) => n.startsWith("disp"))).toEqual([]);
  });

  it("a domain filling its root overlay is stopped by its bound, on the data disk, while qvmd and the other domain work", async () => {
    const overlay = path.join(d.dirs.dataDir, "volatile", "jailed", "root.qcow2");
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", "-U", overlay])).stdout) as { "virtual-size": number };
    // Zeros are written as data (QEMU detects no zeroes here): the guest's root fills to the end.
    const fill = await sh("jailed", "dd if=/dev/zero of=/fill bs=4M 2>&1; sync; df -k / | tail -1", { root: true });
    expect(fill.stdout).toMatch(/No space left on device/);
    const grown = statSync(overlay).size;
    expect(grown).toBeGreaterThan(info["virtual-size"] / 2);
    expect(grown).toBeLessThan(info["virtual-size"] * 1.05); // the template's root size, plus qcow2 metadata
    // The runtime directory (RAM-backed under systemd) holds none of it: only sockets and small files.
    const rt = path.join(d.dirs.runtimeDir, "domains", "jailed");
    const inRuntime = readdirSync(rt).reduce((n, f) => n + statSync(path.join(rt, f)).size, 0);
    expect(inRuntime).toBeLessThan(1024 * 1024);
    expect((await sh("neighbour", "echo ok")).stdout.trim()).toBe("ok");
    expect((await d.qvm(["ls"])).exitCode).toBe(0);
    await sh("jailed", "rm -f /fill", { root: true });
  });

  it("a stopped domain leaves no jail, cgroup or process behind; the domain is marked as TCG in qvm ls --json", async () => {
    const ls = JSON.parse((await d.qvm(["ls", "--json"])).stdout) as Array<ReturnType<typeof domainInWords>>;
    expect(ls.find((x) => x.name === "jailed")).toBeDefined();
    const r = await d.qvm(["shutdown", "--wait", "jailed"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(vmmProcesses("jailed")).toEqual([]);
    expect(processesMentioning(path.join(d.dirs.runtimeDir, "domains", "jailed", ""))).toEqual([]);
  });
});
