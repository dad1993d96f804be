// VMMs run jailed, with real VMs: not root, QEMU under seccomp, no new privileges, in memory and
// pids cgroups, and unable to open another domain's volume. qvmd runs as root here, as in CI.
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execa } from "execa";
import { domainInWords } from "@qvm/protocol";
import { processesMentioning } from "./fixtures.js";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

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

beforeAll(async () => {
  d = await withDaemon("e2e-sandbox");
  await withDomain(d, "jailed", { label: "orange", properties: { memory: "500" }, start: true });
  await withDomain(d, "neighbour", { label: "green", properties: { memory: "400" } });
});

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("VMM sandbox with real VMs", () => {
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

  it("a stopped domain leaves no jail, cgroup or process behind; the domain is marked as TCG in qvm ls --json", async () => {
    const ls = JSON.parse((await d.qvm(["ls", "--json"])).stdout) as Array<ReturnType<typeof domainInWords>>;
    expect(ls.find((x) => x.name === "jailed")).toBeDefined();
    const r = await d.qvm(["shutdown", "--wait", "jailed"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(vmmProcesses("jailed")).toEqual([]);
    expect(processesMentioning(path.join(d.dirs.runtimeDir, "domains", "jailed", ""))).toEqual([]);
  });
});
