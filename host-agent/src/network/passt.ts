// The user-mode uplink: passt (a Debian package) gives sys-net a way out through ordinary
// sockets of the host, with no tap device, bridge or address on the host. passt parses
// sys-net's frames, so it runs confined: as the domain's own unprivileged VMM uid (--runas), in
// the namespaces and seccomp filter passt puts itself in, and only while sys-net runs (-1: it
// exits when the VMM closes the link). docs/security.md lists it with the VMMs.
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { spawnDetached } from "../vmm/process.js";
import type { VmmUser } from "../vmm/driver.js";
import { PASST_GUEST, UPLINK_MAC } from "./addresses.js";
import { netDirOf } from "./link-files.js";

export const passtSocketOf = (runtimeDir: string) => path.join(netDirOf(runtimeDir), "passt.sock");

export function passtBinary(): string {
  const candidates = [process.env.QVM_PASST, "/usr/bin/passt", "/usr/local/bin/passt"].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new QvmError("MISSING_DEPENDENCY", "passt is not installed (uplink passt needs it): run `bash scripts/install-system-deps.sh`, or `apt-get install passt`");
  return found;
}

/** passt's command line: IPv4 only, fixed guest addresses, no port forwarded into sys-net. */
export function passtArgs(socket: string, user: VmmUser | undefined): string[] {
  return [
    "--foreground", "--quiet", "--one-off", "--ipv4-only",
    ...(user ? ["--runas", `${user.uid}:${user.gid}`] : []),
    "--socket", socket,
    "--address", PASST_GUEST.address, "--netmask", String(PASST_GUEST.prefix), "--gateway", PASST_GUEST.gateway,
    "--dns-forward", PASST_GUEST.dns,
    "--mac-addr", "fe:ff:ff:fe:00:02",
    "--tcp-ports", "none", "--udp-ports", "none",
    // Without this, sys-net reaching the gateway address would reach the host's loopback services.
    "--no-map-gw",
  ];
}

/** What the uplink looks like from inside sys-net. */
export function passtUplink() {
  return { mac: UPLINK_MAC, address: PASST_GUEST.address, prefix: PASST_GUEST.prefix, gateway: PASST_GUEST.gateway, dns: [PASST_GUEST.dns] };
}

/** Starts passt for a domain and waits for its socket; returns how to stop it. */
export async function startPasst(runtimeDir: string, logDir: string, user: VmmUser | undefined): Promise<() => void> {
  const socket = passtSocketOf(runtimeDir);
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const proc = await spawnDetached(passtBinary(), passtArgs(socket, user), path.join(logDir, "passt.log"));
  const stop = () => {
    try {
      process.kill(proc.pid, "SIGTERM");
    } catch {
      // already gone
    }
  };
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (exited) throw new QvmError("VMM_FAILED", `passt exited at start; see ${path.join(logDir, "passt.log")}`);
    if (Date.now() > deadline) {
      stop();
      throw new QvmError("VMM_FAILED", `passt did not open ${socket} within 10 s; see ${path.join(logDir, "passt.log")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return stop;
}
