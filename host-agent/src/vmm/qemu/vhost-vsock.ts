// vhost-device-vsock (rust-vmm) serves the guest's virtio-vsock device over vhost-user and speaks
// hybrid vsock on a Unix socket, like cloud-hypervisor does natively (PLATFORM.md: the host has no
// vhost_vsock module, so QEMU's vhost-vsock-pci cannot be used).
import { existsSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import { spawnDetached, sleep, type SpawnedProcess } from "../process.js";

export async function startVhostVsock(
  binary: string,
  opts: { guestCid: number; vhostUserSocket: string; udsPath: string; logPath: string; wrap?: (command: string[]) => string[] },
): Promise<SpawnedProcess> {
  const command = [binary, "--guest-cid", String(opts.guestCid), "--socket", opts.vhostUserSocket, "--uds-path", opts.udsPath];
  const [file, ...args] = opts.wrap ? opts.wrap(command) : command;
  const proc = await spawnDetached(file!, args, opts.logPath);
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!existsSync(opts.vhostUserSocket)) {
    if (exited) throw new QvmError("VMM_FAILED", `vhost-device-vsock exited at start; see ${opts.logPath}`);
    if (Date.now() > deadline) throw new QvmError("VMM_FAILED", `vhost-device-vsock did not create its socket; see ${opts.logPath}`);
    await sleep(20);
  }
  return proc;
}
