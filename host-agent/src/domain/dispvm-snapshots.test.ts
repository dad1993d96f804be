// Disposables restored from their template's snapshot (issue 17), through the real DomainVm, the
// cloud-hypervisor driver and its jail (root, as qvmd), with the fake cloud-hypervisor standing in
// for CH and a stand-in guest agent behind its vsock: the first disposable makes the snapshot
// with one boot, later ones are restored from it with fresh overlays on its frozen disks, each is
// told its own name, and a new key replaces the old snapshot.
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentV1 } from "@qvm/protocol";
import type { KernelBundle } from "@qvm/images";
import { CloudHypervisorDriver } from "../vmm/cloud-hypervisor/ch-driver.js";
import { createOverlay } from "../storage/qemu-img.js";
import type { DiskSpec } from "../vmm/driver.js";
import type { BootPlan } from "./boot-plan.js";
import { DispvmSnapshots } from "./dispvm-snapshots.js";
import type { DomainVm, DomainVmOptions } from "./domain-vm.js";

const FAKE = path.join(__dirname, "../vmm/cloud-hypervisor/testing/fake-cloud-hypervisor.mjs");
const UID = 900_002_345;
let dir = "";
let server: Server;
const reidentified: { hostname: string; entropy: number }[] = [];
const logs: string[] = [];
const running: DomainVm[] = [];

/** The stand-in guest agent: answers Ping and records Reidentify. */
const agent = {
  ping: (_c: unknown, cb: (e: null, r: agentV1.PingResponse) => void) => cb(null, { agentVersion: "test" }),
  reidentify: (call: { request: agentV1.ReidentifyRequest }, cb: (e: null, r: agentV1.ReidentifyResponse) => void) => {
    reidentified.push({ hostname: call.request.hostname, entropy: call.request.entropy.length });
    cb(null, {});
  },
} as unknown as agentV1.GuestAgentServer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-dispsnap-"));
  chmodSync(dir, 0o755);
  for (const f of ["vmlinux", "initrd.img", "modules.img"]) writeFileSync(path.join(dir, f), "k", { mode: 0o644 });
  execFileSync("qemu-img", ["create", "-q", "-f", "raw", path.join(dir, "tmpl-root.img"), "1M"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", path.join(dir, "tmpl-private.qcow2"), "1M"]);
  chmodSync(path.join(dir, "tmpl-root.img"), 0o644);
  chmodSync(path.join(dir, "tmpl-private.qcow2"), 0o644);
  // The agent listens where the jailed fake can reach it: in the log directory (/vm/log in its view).
  mkdirSync(path.join(dir, "logs"), { recursive: true });
  server = new Server();
  server.addService(agentV1.GuestAgentService, agent);
  await new Promise<void>((res, rej) => server.bindAsync(`unix:${path.join(dir, "agent-under-test.sock")}`, ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
});
afterAll(async () => {
  for (const d of running) await d.kill().catch(() => {});
  server?.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

/** A disposable's fresh overlays on the template's volumes, as VolumeStore.prepareStart makes them. */
async function disposableDisks(name: string): Promise<DiskSpec[]> {
  const v = path.join(dir, "volatile", name);
  mkdirSync(v, { recursive: true });
  await createOverlay(path.join(dir, "tmpl-root.img"), path.join(v, "root.qcow2"));
  await createOverlay(path.join(dir, "tmpl-private.qcow2"), path.join(v, "private.qcow2"), "qcow2");
  return [
    { serial: "root", path: path.join(v, "root.qcow2"), format: "qcow2", readonly: false, backingFiles: [path.join(dir, "tmpl-root.img")] },
    { serial: "private", path: path.join(v, "private.qcow2"), format: "qcow2", readonly: false, backingFiles: [path.join(dir, "tmpl-private.qcow2")] },
  ];
}

function options(name: string, disks: DiskSpec[]): DomainVmOptions {
  const logDir = path.join(dir, "logs", name);
  mkdirSync(logDir, { recursive: true });
  // The fake forwards the agent's port to the stand-in, reached through the log directory.
  rmSync(path.join(logDir, "agent.sock"), { force: true });
  execFileSync("ln", [path.join(dir, "agent-under-test.sock"), path.join(logDir, "agent.sock")]);
  return {
    name,
    driver: new CloudHypervisorDriver({
      binary: FAKE,
      accel: { accel: "kvm", why: "test" },
      cgroups: false,
      // The stand-in guest sends the agent's ready signal (AGENT_READY_VSOCK_PORT), as a real one does.
      env: { ...process.env, FAKE_CH_FORWARD: "1024=/vm/log/agent.sock", FAKE_CH_DIAL_HOST_PORT: "52", FAKE_CH_MAX_LIFETIME_MS: "60000" },
    }),
    kernel: { image: path.join(dir, "vmlinux"), initrd: path.join(dir, "initrd.img"), modules: path.join(dir, "modules.img") } as KernelBundle,
    disks,
    runtimeDir: path.join(dir, "run", "domains", name),
    logDir,
    memoryMiB: 256,
    vcpus: 1,
    agentTimeoutMs: 15_000,
    user: { uid: UID, gid: UID },
    log: (m) => logs.push(m),
  };
}

async function diskedOptions(name: string): Promise<[DiskSpec[], DomainVmOptions]> {
  const disks = await disposableDisks(name);
  return [disks, options(name, disks)];
}

const plan = (name: string, key: string) => ({ name, fromSnapshot: { template: "dvm", key } }) as BootPlan & Required<Pick<BootPlan, "fromSnapshot">>;

describe("disposables from a snapshot (cloud-hypervisor, faked)", () => {
  const snapshots = () => new DispvmSnapshots(path.join(dir, "snapshots"), (m) => logs.push(m));
  let store: DispvmSnapshots;
  beforeAll(() => {
    store = snapshots();
  });

  it("makes the snapshot with one boot of the first disposable, then restores it as that disposable", async () => {
    const vm = await store.start(plan("disp1", "k1"), ...(await diskedOptions("disp1")));
    running.push(vm);
    const snap = store.dirOf("dvm", "k1");
    expect(readdirSync(snap).sort()).toEqual(["private.qcow2", "ready", "root.qcow2", "vm"]);
    expect(existsSync(path.join(snap, "vm", "config.json"))).toBe(true);
    // Landlock of every restored VM is the snapshot's: it may read the frozen disks' directory.
    const config = JSON.parse(readFileSync(path.join(snap, "vm", "config.json"), "utf8")) as { landlock_rules: unknown[] };
    expect(config.landlock_rules).toContainEqual({ path: snap, access: "r" });
    expect(config.landlock_rules).toContainEqual({ path: "/vm/snapshot", access: "rw" });
    // Made by the VMM's uid, handed to root and readable by every later disposable's VMM.
    const st = statSync(path.join(snap, "vm", "config.json"));
    expect([st.uid, st.mode & 0o777]).toEqual([0, 0o644]);
    expect(logs.filter((l) => l.includes("making the snapshot"))).toHaveLength(1);
    // The source booted through the ready signal, not the fallback dial.
    expect(logs.filter((l) => l.includes("did not announce"))).toEqual([]);
    expect(reidentified.at(-1)).toEqual({ hostname: "disp1", entropy: 64 });
    expect((await vm.info()).state).toBe("running");
    // Its disks are fresh overlays on the snapshot's frozen ones.
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-U", path.join(dir, "volatile", "disp1", "root.qcow2")], { encoding: "utf8" })) as { "backing-filename": string };
    expect(info["backing-filename"]).toBe(path.join(snap, "root.qcow2"));
  });

  it("restores a later disposable without a boot, and tells it its own name", async () => {
    const before = logs.filter((l) => l.includes("making the snapshot")).length;
    const vm = await store.start(plan("disp2", "k1"), ...(await diskedOptions("disp2")));
    running.push(vm);
    expect(logs.filter((l) => l.includes("making the snapshot")).length).toBe(before);
    expect(reidentified.at(-1)).toEqual({ hostname: "disp2", entropy: 64 });
  });

  it("replaces the snapshot when the key changes (a new template volume, kernel or shape)", async () => {
    for (const d of running.splice(0)) await d.kill();
    const vm = await snapshots().start(plan("disp3", "k2"), ...(await diskedOptions("disp3")));
    running.push(vm);
    expect(readdirSync(path.join(dir, "snapshots", "dvm"))).toEqual(["k2"]);
    expect(reidentified.at(-1)?.hostname).toBe("disp3");
  });
});
