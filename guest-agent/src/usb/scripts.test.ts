// The shell side of USB over qrexec, run for real on fake trees (QVM_TEST_ROOT): qrexec-run's
// socket mode (the service's fd 0 and fd 1 are one socket), qubes.USB and usb-release against a
// fake /sys/bus/usb, usb-import and usb-attach against a fake vhci_hcd.0 whose "kernel" is this
// test (it answers attach and detach by rewriting the status file), with stand-ins for modprobe
// and qrexec-client-vm. What the kernel itself does (usbip-host, vhci-hcd, the socket handed to
// it) is not here: tests/e2e and real domains.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STICK_ATTRS, addDevice } from "./testing.js";

const guestAgent = path.resolve(import.meta.dirname, "../..");
const QREXEC_RUN = path.join(guestAgent, "rpc/qrexec-run");
const QUBES_USB = path.join(guestAgent, "rpc/qubes.USB");
const USB_DIR = path.join(guestAgent, "usb");

let dir = "";
const children: ChildProcess[] = [];
const kernels: NodeJS.Timeout[] = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-scripts-"));
});
afterAll(() => {
  for (const t of kernels) clearInterval(t);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(argv: string[], env: Record<string, string>, stdin?: string): Running {
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: "pipe" });
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin!.on("error", () => {});
  if (stdin !== undefined) child.stdin!.end(stdin);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("close", (code, signal) => r({ code, signal })));
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

async function run(argv: string[], env: Record<string, string>, stdin = "") {
  const r = start(argv, env, stdin);
  const { code } = await r.done;
  return { code, stdout: r.stdout(), stderr: r.stderr() };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(10);
  }
}

const script = (p: string, text: string) => {
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text);
  chmodSync(p, 0o755);
};

describe("qrexec-run socket mode", () => {
  let root = "";
  let env: Record<string, string> = {};
  beforeAll(() => {
    root = path.join(dir, "qrexec");
    env = { QVM_TEST_ROOT: root };
    const fds = `#!/bin/sh\nreadlink /proc/self/fd/0 /proc/self/fd/1\necho "arg=$1"\n`;
    script(path.join(root, "etc/qubes-rpc/test.Socket"), fds);
    script(path.join(root, "etc/qubes-rpc/test.Pipes"), fds);
    script(path.join(root, "etc/qubes-rpc/test.Off"), fds);
    script(path.join(root, "usr/local/etc/qubes-rpc/test.Cat"), "#!/bin/sh\nexec cat\n");
    script(path.join(root, "etc/qubes-rpc/test.Fail"), "#!/bin/sh\necho failing >&2\nexit 3\n");
    const conf = path.join(root, "etc/qubes/rpc-config");
    mkdirSync(conf, { recursive: true });
    writeFileSync(path.join(conf, "test.Socket"), "# a comment\nqvm-socket=yes\n");
    writeFileSync(path.join(conf, "test.Cat"), "qvm-socket = yes\n");
    writeFileSync(path.join(conf, "test.Fail"), "qvm-socket=yes\n");
    writeFileSync(path.join(conf, "test.Off"), "qvm-socket=no\n");
    // The configuration of SERVICE+ARG comes before SERVICE's, as in Qubes.
    writeFileSync(path.join(conf, "test.Socket+pipes"), "wait-for-session=0\n");
  });

  const fds = (out: string) => {
    const [fd0, fd1, arg] = out.trim().split("\n");
    return { fd0, fd1, arg };
  };

  it("gives a socket-mode service one socket as fd 0 and fd 1, and the argument as $1", async () => {
    const r = await run(["sh", QREXEC_RUN, "test.Socket", "2-1"], env);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    const { fd0, fd1, arg } = fds(r.stdout);
    expect(fd0).toMatch(/^socket:\[\d+\]$/);
    expect(fd1).toBe(fd0);
    expect(arg).toBe("arg=2-1");
    const noArg = fds((await run(["sh", QREXEC_RUN, "test.Socket", ""], env)).stdout);
    expect(noArg.fd1).toBe(noArg.fd0);
    expect(noArg.arg).toBe("arg=");
  });

  it("keeps two channels for every other service, as before", async () => {
    for (const [service, arg] of [["test.Pipes", "x"], ["test.Off", ""], ["test.Socket", "pipes"]]) {
      const r = await run(["sh", QREXEC_RUN, service!, arg!], env);
      // What the caller gave: here Node's stdio, which are socket pairs too, one for each.
      const { fd0, fd1 } = fds(r.stdout);
      expect([service, fd0]).toEqual([service, expect.stringMatching(/^(pipe|socket):\[\d+\]$/)]);
      expect([service, fd1]).not.toEqual([service, fd0]);
    }
    expect(await run(["sh", QREXEC_RUN, "test.None", ""], env)).toMatchObject({ code: 127, stdout: "", stderr: expect.stringContaining("qrexec: no service test.None") });
  });

  it("carries data both ways through the socket (a service in /usr/local/etc/qubes-rpc)", async () => {
    const data = "x".repeat(200_000) + "\nend\n";
    const r = await run(["sh", QREXEC_RUN, "test.Cat", ""], env, data);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(data.length);
    expect(r.stdout === data).toBe(true);
  });

  it("a failing socket-mode service: its stderr passes; the call's exit code is socat's (0 or 1), not the service's", async () => {
    const r = await run(["sh", QREXEC_RUN, "test.Fail", ""], env);
    expect([0, 1]).toContain(r.code);
    expect(r.stderr).toContain("failing\n");
  });

  it("refuses socket mode for a path socat's EXEC would misread", async () => {
    const odd = path.join(dir, "odd,root");
    script(path.join(odd, "etc/qubes-rpc/test.Socket"), "#!/bin/sh\necho ran\n");
    mkdirSync(path.join(odd, "etc/qubes/rpc-config"), { recursive: true });
    writeFileSync(path.join(odd, "etc/qubes/rpc-config/test.Socket"), "qvm-socket=yes\n");
    const r = await run(["sh", QREXEC_RUN, "test.Socket", ""], { QVM_TEST_ROOT: odd });
    expect(r).toMatchObject({ code: 126, stdout: "", stderr: expect.stringContaining("socket mode") });
  });
});

/** A domain's fake tree: /sys/bus/usb with drivers usb and usbip-host, vhci_hcd.0, /run, the USB scripts, a stand-in modprobe. */
function usbDomain(name: string) {
  const root = path.join(dir, name);
  const devices = path.join(root, "sys/bus/usb/devices");
  const drivers = path.join(root, "sys/bus/usb/drivers");
  const host = path.join(drivers, "usbip-host");
  const vhci = path.join(root, "sys/devices/platform/vhci_hcd.0");
  for (const d of [devices, path.join(drivers, "usb"), host, vhci, path.join(root, "run"), path.join(root, "usr/lib/qvm")]) mkdirSync(d, { recursive: true });
  for (const f of [path.join(drivers, "usb/unbind"), path.join(host, "bind"), path.join(host, "unbind"), path.join(host, "rebind"), path.join(host, "match_busid"), path.join(root, "sys/bus/usb/drivers_probe")]) writeFileSync(f, "");
  for (const f of ["attach", "detach"]) writeFileSync(path.join(vhci, f), "");
  for (const name of readdirSync(USB_DIR)) {
    copyFileSync(path.join(USB_DIR, name), path.join(root, "usr/lib/qvm", name));
    chmodSync(path.join(root, "usr/lib/qvm", name), 0o755);
  }
  const bin = path.join(root, "bin");
  script(path.join(bin, "modprobe"), `#!/bin/sh\necho "$*" >>"${root}/modprobe.log"\nexit "\${FAKE_MODPROBE_RC:-0}"\n`);
  // qrexec-client-vm TARGET SERVICE PROGRAM...: logs the call, then, as FAKE_QREXEC says, refuses,
  // or runs the program with stdin closed after writing FAKE_STDERR (a backend's message), or
  // feeds it FAKE_HEADER and keeps its stdin open until the file FAKE_END exists or it ends.
  script(
    path.join(bin, "qrexec-client-vm"),
    `#!/bin/sh
echo "$1 $2" >>"${root}/qrexec.log"
shift 2
case \${FAKE_QREXEC:-} in
  refuse) echo "Request refused" >&2; exit 126 ;;
  stderr) printf '%b\\n' "$FAKE_STDERR" >&2; "$@" </dev/null ;;
  header)
    in=$(mktemp -u "${root}/feed.XXXXXX")
    mkfifo "$in"
    { printf '%b' "$FAKE_HEADER"; while [ ! -e "$FAKE_END" ] && [ -d "${root}" ]; do sleep 0.05; done; } >"$in" &
    feeder=$!
    "$@" <"$in"
    rc=$?
    kill "$feeder" 2>/dev/null
    rm -f "$in"
    exit "$rc" ;;
esac
`,
  );
  const env = { QVM_TEST_ROOT: root, PATH: `${bin}:${process.env.PATH}`, FAKE_END: path.join(root, "end") };
  const read = (p: string) => readFileSync(path.join(root, p), "utf8");
  return { root, devices, host, vhci, env, read };
}

type Domain = ReturnType<typeof usbDomain>;

describe("qubes.USB (backend)", () => {
  const stick = (d: Domain, extra: Record<string, string> = {}, driver = "usb") =>
    addDevice(d.devices, "2-1", { attrs: { ...STICK_ATTRS, usbip_status: "1", ...extra }, driver });

  it("binds the device to usbip-host, sends DEVID SPEED, hands fd 0 to the kernel, stays while used, then gives the device back", async () => {
    const d = usbDomain("backend-ok");
    stick(d);
    // usbip_sockfd is a fifo, so that this test, as the kernel, sees the write and marks the device used first.
    const sockfd = path.join(d.devices, "2-1/usbip_sockfd");
    execFileSync("mkfifo", [sockfd]);
    const p = start(["sh", QUBES_USB, "2-1"], d.env, "");
    await until(() => p.stdout() !== "");
    expect(p.stdout()).toBe(`${(2 << 16) | 3} 480\n`);
    writeFileSync(path.join(d.devices, "2-1/usbip_status"), "2\n");
    expect(readFileSync(sockfd, "utf8")).toBe("0\n");
    expect(d.read("sys/bus/usb/drivers/usb/unbind")).toBe("2-1\n");
    expect(d.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("add 2-1");
    expect(d.read("sys/bus/usb/drivers/usbip-host/bind")).toBe("2-1\n");
    expect(d.read("modprobe.log")).toBe("usbip-host\n");
    await sleep(1500);
    expect(p.child.exitCode).toBeNull();
    // The connection ends: usbip_status leaves 2; usb-release takes the bus id out of usbip-host's list.
    writeFileSync(path.join(d.devices, "2-1/usbip_status"), "1\n");
    expect(await p.done).toEqual({ code: 0, signal: null });
    expect(p.stderr()).toBe("");
    expect(d.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("del 2-1");
  });

  it("gives the device back on SIGTERM", async () => {
    const d = usbDomain("backend-term");
    stick(d);
    execFileSync("mkfifo", [path.join(d.devices, "2-1/usbip_sockfd")]);
    const p = start(["sh", QUBES_USB, "2-1"], d.env, "");
    await until(() => p.stdout() !== "");
    writeFileSync(path.join(d.devices, "2-1/usbip_status"), "2\n");
    readFileSync(path.join(d.devices, "2-1/usbip_sockfd"));
    await sleep(200);
    // The kernel bound it to usbip-host; usb-release ends the connection and unbinds it.
    rmSync(path.join(d.devices, "2-1/driver"));
    symlinkSync("../../drivers/usbip-host", path.join(d.devices, "2-1/driver"));
    rmSync(path.join(d.devices, "2-1/usbip_sockfd"));
    writeFileSync(path.join(d.devices, "2-1/usbip_sockfd"), "");
    p.child.kill("SIGTERM");
    // usb-release writes -1 to usbip_sockfd and waits for usbip_status to leave 2.
    await until(() => d.read("sys/bus/usb/devices/2-1/usbip_sockfd") === "-1\n");
    writeFileSync(path.join(d.devices, "2-1/usbip_status"), "1\n");
    const end = await p.done;
    expect(end.code).toBe(143);
    expect(d.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("del 2-1");
    expect(d.read("sys/bus/usb/drivers/usbip-host/unbind")).toBe("2-1\n");
    // "rebind" (no newline) removes the match entry and probes; the fake kernel does neither.
    expect(d.read("sys/bus/usb/drivers/usbip-host/rebind")).toBe("2-1");
    // The fake kernel does not rebind: usb-release says the device is still usbip-host's.
    expect(p.stderr()).toBe("usb-release: 2-1 is still bound to usbip-host\n");
  });

  it("refuses a bad bus id, a missing device, a hub, a device in use, a missing module: one line, exit 1, nothing on stdout", async () => {
    const d = usbDomain("backend-refuse");
    stick(d);
    addDevice(d.devices, "1-1", { attrs: { ...STICK_ATTRS, bDeviceClass: "09" }, driver: "usb" });
    addDevice(d.devices, "3-1", { attrs: { ...STICK_ATTRS, usbip_status: "2" }, driver: "usbip-host" });
    const cases: [string, Record<string, string>, RegExp][] = [
      ["", {}, /must be a USB bus id/],
      ["2-1:1.0", {}, /must be a USB bus id/],
      ["usb1", {}, /must be a USB bus id/],
      ["0-1", {}, /must be a USB bus id/],
      ["../2-1", {}, /must be a USB bus id/],
      ["2-1\n2-1", {}, /must be a USB bus id/],
      ["9-9", {}, /9-9: no such device/],
      ["1-1", {}, /1-1 is a hub/],
      ["3-1", {}, /3-1 is already attached/],
      ["2-1", { FAKE_MODPROBE_RC: "1" }, /cannot load the kernel module usbip-host/],
    ];
    for (const [busid, extra, message] of cases) {
      const r = await run(["sh", QUBES_USB, busid], { ...d.env, ...extra });
      expect([busid, r.code, r.stdout]).toEqual([busid, 1, ""]);
      expect(r.stderr).toMatch(/^qubes\.USB: [^\n]*\n$/);
      expect(r.stderr).toMatch(message);
    }
    // Nothing was touched.
    for (const f of ["drivers/usb/unbind", "drivers/usbip-host/bind", "drivers/usbip-host/match_busid"]) expect(d.read(`sys/bus/usb/${f}`)).toBe("");
  });

  it("refuses a second export of a device while one runs (the lock), and one the kernel does not make available", async () => {
    const d = usbDomain("backend-lock");
    stick(d);
    execFileSync("mkfifo", [path.join(d.devices, "2-1/usbip_sockfd")]);
    const first = start(["sh", QUBES_USB, "2-1"], d.env, "");
    await until(() => first.stdout() !== "");
    const second = await run(["sh", QUBES_USB, "2-1"], d.env);
    expect(second).toEqual({ code: 1, stdout: "", stderr: "qubes.USB: 2-1 is already being exported\n" });
    // The first goes on (usbip_status never becomes 2 here, so it ends at once).
    expect(readFileSync(path.join(d.devices, "2-1/usbip_sockfd"), "utf8")).toBe("0\n");
    expect(await first.done).toEqual({ code: 0, signal: null });

    const e = usbDomain("backend-unavailable");
    stick(e, { usbip_status: "3" });
    const r = await run(["sh", QUBES_USB, "2-1"], e.env);
    expect(r).toMatchObject({ code: 1, stdout: "", stderr: expect.stringContaining("not available for export (usbip_status 3)") });
    // Given back: out of usbip-host's list again.
    expect(e.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("del 2-1");
  });
});

describe("usb-release", () => {
  const release = (d: Domain, busid: string) => run(["sh", path.join(d.root, "usr/lib/qvm/usb-release"), busid], d.env);

  it("does nothing (exit 0) for a device another driver has, or one that is gone, but drops its usbip-host match", async () => {
    const d = usbDomain("release-nothing");
    addDevice(d.devices, "2-1", { attrs: STICK_ATTRS, driver: "usb" });
    expect(await release(d, "2-1")).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(d.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("del 2-1");
    expect(d.read("sys/bus/usb/drivers/usbip-host/unbind")).toBe("");
    expect(d.read("sys/bus/usb/drivers_probe")).toBe("");
    expect(await release(d, "5-5")).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  it("probes a device left with no driver", async () => {
    const d = usbDomain("release-nodriver");
    addDevice(d.devices, "2-1", { attrs: STICK_ATTRS });
    expect(await release(d, "2-1")).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(d.read("sys/bus/usb/drivers_probe")).toBe("2-1\n");
  });

  it("ends a connection still in use, unbinds from usbip-host and probes", async () => {
    const d = usbDomain("release-used");
    addDevice(d.devices, "2-1", { attrs: { ...STICK_ATTRS, usbip_status: "2", usbip_sockfd: "" }, driver: "usbip-host" });
    const p = start(["sh", path.join(d.root, "usr/lib/qvm/usb-release"), "2-1"], d.env, "");
    await until(() => d.read("sys/bus/usb/devices/2-1/usbip_sockfd") === "-1\n");
    await sleep(300);
    expect(p.child.exitCode).toBeNull();
    writeFileSync(path.join(d.devices, "2-1/usbip_status"), "1\n");
    expect((await p.done).code).toBe(1);
    expect(d.read("sys/bus/usb/drivers/usbip-host/match_busid")).toBe("del 2-1");
    expect(d.read("sys/bus/usb/drivers/usbip-host/unbind")).toBe("2-1\n");
    expect(d.read("sys/bus/usb/drivers/usbip-host/rebind")).toBe("2-1");
    expect(p.stderr()).toBe("usb-release: 2-1 is still bound to usbip-host\n");
  });

  it("refuses a bad bus id with exit 2", async () => {
    const d = usbDomain("release-bad");
    for (const busid of ["", "2-1:1.0", "x", "../../x"]) expect((await release(d, busid)).code).toBe(2);
  });
});

/**
 * The kernel's side of vhci_hcd.0 for usb-import: ports 0-1 hs and 8 ss; an attach takes the port
 * (VDEV_ST_NOTASSIGNED), and a moment later the device is enumerated: the port is used (with its
 * devid) and the device 3-N appears, or, with `drop`, the port is free again. A detach frees it.
 * Status lines as drivers/usb/usbip/vhci_sysfs.c writes them.
 */
function fakeVhci(d: Domain, opts: { drop?: boolean; taken?: number[] } = {}) {
  const ports = new Map<number, { kind: string; devid: number; speed: number; busid: string; used: boolean } | undefined>([
    [0, undefined],
    [1, undefined],
    [8, undefined],
  ]);
  for (const p of opts.taken ?? []) ports.set(p, { kind: p < 8 ? "hs" : "ss", devid: 0x10002, speed: 3, busid: "3-9", used: true });
  const kindOf = (p: number) => (p < 8 ? "hs" : "ss");
  const writeStatus = () => {
    const lines = ["hub port sta spd dev      sockfd local_busid"];
    for (const [p, v] of ports) {
      const port = String(p).padStart(4, "0");
      if (v?.used) lines.push(`${kindOf(p)}  ${port} 006 ${String(v.speed).padStart(3, "0")} ${v.devid.toString(16).padStart(8, "0")} 000003 ${v.busid}`);
      else lines.push(`${kindOf(p)}  ${port} ${v ? "005" : "004"} 000 00000000 000000 0-0`);
    }
    writeFileSync(path.join(d.vhci, "status.tmp"), `${lines.join("\n")}\n`);
    renameSync(path.join(d.vhci, "status.tmp"), path.join(d.vhci, "status"));
  };
  writeStatus();
  const attaches: string[] = [];
  const detaches: string[] = [];
  const kernel = () => {
    // Enumerates what was attached at the last tick.
    for (const [p, v] of ports) {
      if (!v || v.used) continue;
      if (opts.drop) ports.set(p, undefined);
      else {
        v.used = true;
        mkdirSync(path.join(d.devices, v.busid), { recursive: true });
      }
      writeStatus();
    }
    const attach = readFileSync(path.join(d.vhci, "attach"), "utf8");
    if (attach) {
      writeFileSync(path.join(d.vhci, "attach"), "");
      attaches.push(attach);
      const [port, , devid, speed] = attach.trim().split(" ").map(Number);
      ports.set(port!, { kind: kindOf(port!), devid: devid!, speed: speed!, busid: `3-${port! + 1}`, used: false });
      writeStatus();
    }
    const detach = readFileSync(path.join(d.vhci, "detach"), "utf8");
    if (detach) {
      writeFileSync(path.join(d.vhci, "detach"), "");
      detaches.push(detach);
      const v = ports.get(Number(detach.trim()));
      if (v) rmSync(path.join(d.devices, v.busid), { recursive: true, force: true });
      ports.set(Number(detach.trim()), undefined);
      writeStatus();
    }
  };
  const timer = setInterval(() => {
    try {
      kernel();
    } catch {
      // The tree is gone: the test ended.
    }
  }, 10);
  kernels.push(timer);
  return { attaches, detaches, stop: () => clearInterval(timer) };
}

describe("usb-import (frontend)", () => {
  const importer = (d: Domain, args: string[]) => ["bash", path.join(d.root, "usr/lib/qvm/usb-import"), ...args];

  it("attaches a high-speed device to a free hs port, says so, stays while attached, detaches on SIGTERM", async () => {
    const d = usbDomain("import-hs");
    const kernel = fakeVhci(d, { taken: [0] });
    const state = path.join(d.root, "run/state");
    // The header, then what follows it (the USB/IP stream), which usb-import must not read.
    const p = start(importer(d, [state]), d.env, "131075 480\nUSBIP");
    await until(() => existsSync(state));
    expect(readFileSync(state, "utf8")).toBe("1 131075\n");
    await until(() => p.stderr() !== "");
    expect(p.stderr()).toBe("qvm-usb: attached to port 1\n");
    expect(kernel.attaches).toEqual(["1 0 131075 3\n"]);
    expect(d.read("modprobe.log")).toBe("vhci-hcd\n");
    await sleep(1200);
    expect(p.child.exitCode).toBeNull();
    p.child.kill("SIGTERM");
    expect(await p.done).toEqual({ code: 0, signal: null });
    await until(() => kernel.detaches.length > 0);
    expect(kernel.detaches).toEqual(["1\n"]);
    expect(p.stdout()).toBe("");
    kernel.stop();
  });

  it("attaches SuperSpeed (5000, 10000, 20000) as speed 5 on an ss port, and ends by itself when the port is freed", async () => {
    for (const speed of ["5000", "10000", "20000"]) {
      const d = usbDomain(`import-ss-${speed}`);
      const kernel = fakeVhci(d);
      const p = start(importer(d, []), d.env, `4294967295 ${speed}\n`);
      await until(() => p.stderr() !== "");
      expect(p.stderr()).toBe("qvm-usb: attached to port 8\n");
      expect(kernel.attaches).toEqual(["8 0 4294967295 5\n"]);
      // The kernel detached it (the connection ended): usb-import ends within a second or so.
      writeFileSync(path.join(d.vhci, "detach"), "8\n");
      expect(await p.done).toEqual({ code: 0, signal: null });
      kernel.stop();
    }
  });

  it("maps the other speeds to the kernel's enum: 1.5 → 1, 12 → 2, 53.3-480 → 4", async () => {
    for (const [speed, code] of [["1.5", 1], ["12", 2], ["53.3-480", 4]] as const) {
      const d = usbDomain(`import-speed-${code}`);
      const kernel = fakeVhci(d);
      const p = start(importer(d, []), d.env, `65537 ${speed}\n`);
      await until(() => p.stderr() !== "");
      expect(kernel.attaches).toEqual([`0 0 65537 ${code}\n`]);
      p.child.kill("SIGTERM");
      expect((await p.done).code).toBe(0);
      kernel.stop();
    }
  });

  it("refuses a bad header: one line, exit 1, nothing attached", async () => {
    const d = usbDomain("import-bad");
    const kernel = fakeVhci(d);
    const cases: [string, RegExp][] = [
      ["", /the backend sent no device/],
      ["131075 480", /incomplete/],
      ["131075 480 extra\n", /not "DEVID SPEED"/],
      ["-1 480\n", /not "DEVID SPEED"/],
      ["0x10 480\n", /not "DEVID SPEED"/],
      ["4294967296 480\n", /out of range/],
      ["131075 481\n", /speed 481 is not one of/],
      ["131075 unknown\n", /not "DEVID SPEED"/],
      [`${"1".repeat(70)}\n`, /too long/],
    ];
    for (const [header, message] of cases) {
      const r = await run(importer(d, []), d.env, header);
      expect([header, r.code]).toEqual([header, 1]);
      expect(r.stderr).toMatch(/^usb-import: [^\n]*\n$/);
      expect(r.stderr).toMatch(message);
    }
    expect(kernel.attaches).toEqual([]);
    kernel.stop();
  });

  it("gives up when the kernel drops the device, or when no port is free for 5 s", async () => {
    const d = usbDomain("import-drop");
    const kernel = fakeVhci(d, { drop: true });
    const r = await run(importer(d, []), d.env, "131075 480\n");
    expect(r).toMatchObject({ code: 1, stderr: "usb-import: the kernel dropped the device (see dmesg)\n" });
    kernel.stop();

    const e = usbDomain("import-full");
    const full = fakeVhci(e, { taken: [0, 1] });
    const t0 = Date.now();
    const f = await run(importer(e, []), e.env, "131075 480\n");
    expect(f).toMatchObject({ code: 1, stderr: "usb-import: no free hs port on vhci_hcd took the device within 5 s (see dmesg)\n" });
    expect(Date.now() - t0).toBeGreaterThan(4000);
    expect(full.attaches).toEqual([]);
    full.stop();
  }, 15_000);
});

describe("usb-attach (frontend)", () => {
  const attach = (d: Domain, args: string[], env: Record<string, string>) => start(["sh", path.join(d.root, "usr/lib/qvm/usb-attach"), ...args], { ...d.env, ...env }, "");
  const leftovers = (d: Domain) => readdirSync(path.join(d.root, "run")).filter((n) => n.startsWith("qvm-usb-attach."));

  it("calls qubes.USB+BUSID in the backend, prints one line once attached, and on SIGTERM detaches and exits 0", async () => {
    const d = usbDomain("attach-ok");
    const kernel = fakeVhci(d);
    const p = attach(d, ["sys-usb", "2-1"], { FAKE_QREXEC: "header", FAKE_HEADER: "131075 480\\n" });
    await until(() => p.stdout() !== "");
    expect(p.stdout()).toBe("qvm-usb: attached to port 0\n");
    expect(d.read("qrexec.log")).toBe("sys-usb qubes.USB+2-1\n");
    await sleep(500);
    expect(p.child.exitCode).toBeNull();
    p.child.kill("SIGTERM");
    expect(await p.done).toEqual({ code: 0, signal: null });
    await until(() => kernel.detaches.length > 0);
    expect(kernel.detaches[0]).toBe("0\n");
    expect(p.stdout()).toBe("qvm-usb: attached to port 0\n");
    expect(p.stderr()).toBe("");
    expect(leftovers(d)).toEqual([]);
    writeFileSync(d.env.FAKE_END, "");
    kernel.stop();
  });

  it("ends with exit 0 when the connection ends", async () => {
    const d = usbDomain("attach-end");
    const kernel = fakeVhci(d);
    const p = attach(d, ["sys-usb", "1-1.4"], { FAKE_QREXEC: "header", FAKE_HEADER: "131075 5000\\n" });
    await until(() => p.stdout() !== "");
    expect(p.stdout()).toBe("qvm-usb: attached to port 8\n");
    writeFileSync(d.env.FAKE_END, "");
    expect(await p.done).toEqual({ code: 0, signal: null });
    expect(p.stdout()).toBe("qvm-usb: attached to port 8\n");
    expect(leftovers(d)).toEqual([]);
    kernel.stop();
  });

  it("fails with one line naming the reason: refused (126), the backend's refusal, no service, a bad header, unprintable text", async () => {
    const d = usbDomain("attach-fail");
    const kernel = fakeVhci(d);
    const cases: [Record<string, string>, number, string][] = [
      [{ FAKE_QREXEC: "refuse" }, 126, "qvm-usb: cannot attach sys-usb:2-1: the call to sys-usb was refused (qubes.USB policy)\n"],
      [
        { FAKE_QREXEC: "stderr", FAKE_STDERR: "qubes.USB: 2-1 is a hub: hubs are not passed to other domains" },
        1,
        "qvm-usb: cannot attach sys-usb:2-1: qubes.USB: 2-1 is a hub: hubs are not passed to other domains\n",
      ],
      [
        { FAKE_QREXEC: "stderr", FAKE_STDERR: "qrexec: no service qubes.USB in /run/qubes-rpc, /usr/local/etc/qubes-rpc or /etc/qubes-rpc" },
        1,
        "qvm-usb: cannot attach sys-usb:2-1: qrexec: no service qubes.USB in /run/qubes-rpc, /usr/local/etc/qubes-rpc or /etc/qubes-rpc\n",
      ],
      [{ FAKE_QREXEC: "stderr", FAKE_STDERR: "" }, 1, expect.stringMatching(/^qvm-usb: cannot attach sys-usb:2-1: usb-import: the backend sent no device .*\n$/) as unknown as string],
      [{ FAKE_QREXEC: "stderr", FAKE_STDERR: "qubes.USB: bad \\033[31mred\\033[0m\\a" }, 1, "qvm-usb: cannot attach sys-usb:2-1: qubes.USB: bad [31mred[0m\n"],
    ];
    for (const [env, code, stderr] of cases) {
      const p = attach(d, ["sys-usb", "2-1"], env);
      const end = await p.done;
      expect([env, end.code, p.stdout(), p.stderr()]).toEqual([env, code, "", stderr]);
    }
    // A header usb-import refuses.
    const p = attach(d, ["sys-usb", "2-1"], { FAKE_QREXEC: "header", FAKE_HEADER: "hello\\n" });
    expect((await p.done).code).toBe(1);
    expect(p.stderr()).toBe('qvm-usb: cannot attach sys-usb:2-1: usb-import: the backend\'s header line is not "DEVID SPEED"\n');
    writeFileSync(d.env.FAKE_END, "");
    expect(kernel.attaches).toEqual([]);
    expect(leftovers(d)).toEqual([]);
    kernel.stop();
  });

  it("checks its arguments: exit 2", async () => {
    const d = usbDomain("attach-args");
    for (const args of [[], ["sys-usb"], ["sys-usb", "2-1:1.0"], ["-x", "2-1"], ["sys usb", "2-1"], ["sys-usb", "2-1", "x"]]) {
      const p = attach(d, args, {});
      expect([args, (await p.done).code]).toEqual([args, 2]);
      expect(p.stderr()).toMatch(/^qvm-usb: usage: usb-attach BACKEND BUSID/);
    }
    expect(existsSync(path.join(d.root, "qrexec.log"))).toBe(false);
  });
});
