// qrexec figures, with two real domains under one qvmd:
//   qrexec call   a trivial service called domain -> domain through the policy (a raw request
//                 sent by socat in the source, the loop timed inside the guest)
//                 vs a host -> domain Exec of `true` through the admin API, in the same run
//   qvm-copy      qvm-copy-to-vm of a 256 MiB file, timed inside the source
//                 vs the same bytes streamed raw over hybrid vsock from the source to the host
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { execa } from "execa";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { FrameType, adminV1, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { removeTestDaemonDirs, runtimePaths, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";

const CALLS = Number(process.env.QVM_BENCH_QREXEC_CALLS ?? 20);
const COPY_MIB = Number(process.env.QVM_BENCH_COPY_MIB ?? 256);

export async function qrexecFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-qrexec", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (args: string[], input?: string | Buffer) =>
    execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8", input, stdio: [input === undefined ? "ignore" : "pipe", "pipe", "inherit"], maxBuffer: 1 << 20 });
  try {
    writeFileSync(path.join(dirs.dataDir, "policy.d", "30-user.policy"), "test.Nop * src dst allow\nqubes.Filecopy * src dst allow\n");
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    for (const n of ["src", "dst"]) qvm(["create", "--template", template, "--label", "blue", "--prop", "memory=700", n]);
    log("starting two domains for the qrexec figures");
    await Promise.all(["src", "dst"].map((n) => d.client.startDomain({ name: n })));
    qvm(["run", "-p", "--no-pty", "-u", "root", "dst", "--", "sh", "-c", "printf '#!/bin/sh\\n' > /usr/local/etc/qubes-rpc/test.Nop && chmod 755 /usr/local/etc/qubes-rpc/test.Nop"]);
    const req = Buffer.concat([encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target: "dst", service: "test.Nop", argument: "" }).finish()), encodeFrame(FrameType.STDIN)]);
    qvm(["run", "-p", "--no-pty", "src", "--", "sh", "-c", "cat > /tmp/req"], req);

    log(`timing ${CALLS} domain -> domain calls and ${CALLS} host -> domain Execs`);
    const loop = `s=$(date +%s%N); for i in $(seq ${CALLS}); do socat -t 30 - VSOCK-CONNECT:2:50 < /tmp/req > /tmp/out; done; e=$(date +%s%N); echo $(( (e - s) / ${CALLS} / 1000 ))`;
    const callUs = Number(qvm(["run", "-p", "--no-pty", "src", "--", "sh", "-c", loop]).trim());
    if (!(callUs > 0)) throw new Error("the call loop printed no time");
    const execMs: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const t0 = performance.now();
      await execTrue(d.client, "dst");
      execMs.push(performance.now() - t0);
    }
    execMs.sort((a, b) => a - b);

    log(`timing qvm-copy of ${COPY_MIB} MiB and a raw vsock stream of the same size`);
    qvm(["run", "-p", "--no-pty", "src", "--", "sh", "-c", `head -c ${COPY_MIB}M /dev/zero > ~/big`]);
    const copyMs = Number(qvm(["run", "-p", "--no-pty", "src", "--", "sh", "-c", "s=$(date +%s%N); qvm-copy-to-vm dst ~/big >&2; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))"]).trim());
    // The listener lives in this process, so the guest's command must not block its event loop.
    const qvmAsync = async (args: string[]) => (await execa(process.execPath, [cli, ...args], { env, stdin: "ignore", stderr: "inherit" })).stdout;
    const rawMs = await rawStreamMs(dirs.runtimeDir, dirs.dataDir, COPY_MIB, qvmAsync);
    return {
      qrexec: { qvm: callUs / 1000, baseline: execMs[Math.floor(CALLS / 2)]!, unit: "ms", qvmLabel: "domain→domain call (policy)", baselineLabel: "host→domain Exec `true`",
        target: 1.5, note: "The call's time is mostly the policy read, the target agent's Exec and socat's start in the source." },
      "qvm-copy": { qvm: COPY_MIB / (copyMs / 1000), baseline: COPY_MIB / (rawMs / 1000), unit: "MiB/s", qvmLabel: `qvm-copy-to-vm, ${COPY_MIB} MiB`, baselineLabel: "raw hybrid-vsock stream to host",
        // The bound: at least 0.7× the raw stream's throughput.
        target: 1 / 0.7, note: "The packer and the unpacker are Node programs (each pays Node's 1.5 s start under emulation), both domains and qvmd share the host's 2 CPUs, and the target writes the file to its disk; the raw stream runs one guest and writes nothing. The data crosses qvmd and each domain's native relay (socat in the source, qvm-exec-data in the target), no Node agent." },
    };
  } catch (err) {
    log(`qvmd's log ends with:\n${d.log().slice(-3000)}`);
    throw err;
  } finally {
    for (const n of ["src", "dst"]) await d.client.killDomain({ name: n }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}

function execTrue(client: Awaited<ReturnType<typeof startTestDaemon>>["client"], domain: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = client.exec();
    call.on("data", (r: { msg?: { $case: string } }) => {
      if (r.msg?.$case === "exit") resolve();
    });
    call.on("error", reject);
    call.write({ msg: { $case: "start", value: { domain, argv: ["true"], shellCommand: "", env: {}, cwd: "", user: "", pty: false, window: undefined, noAutostart: true, dispvm: "", service: "" } } });
    call.write({ msg: { $case: "closeStdin", value: true } });
  });
}

/** The source streams `mib` MiB to a listener on its own vsock socket (port 5555), timed in the guest. */
async function rawStreamMs(runtimeDir: string, dataDir: string, mib: number, qvm: (args: string[]) => Promise<string>): Promise<number> {
  const vsock = runtimePaths(path.join(runtimeDir, "domains", "src"), path.join(dataDir, "logs", "src")).vsockPath;
  let got = 0;
  const server = net.createServer((s) => s.on("data", (c: Buffer) => (got += c.length)));
  rmSync(`${vsock}_5555`, { force: true });
  await new Promise<void>((r) => server.listen(`${vsock}_5555`, r));
  // The jailed vhost-device-vsock connects to it as the domain's VMM user.
  chmodSync(`${vsock}_5555`, 0o666);
  try {
    const ms = Number((await qvm(["run", "-p", "--no-pty", "src", "--", "sh", "-c", `s=$(date +%s%N); head -c ${mib}M /dev/zero | socat -u - VSOCK-CONNECT:2:5555; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))`])).trim());
    if (got < mib * 1024 * 1024) throw new Error(`raw stream lost bytes: ${got}`);
    return ms;
  } finally {
    server.close();
  }
}
