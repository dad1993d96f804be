// The user-mode uplink: passt (a Debian package) gives sys-net a way out through ordinary
// sockets of the host, with no tap device, bridge or address on the host. passt parses
// sys-net's frames, so it runs confined the way passt confines itself: it drops to the domain's
// own unprivileged VMM uid (--runas), enters new user, mount, IPC and UTS namespaces with an
// empty root, and applies its seccomp filter; and it lives only while sys-net runs (-1: it exits
// when the VMM closes the link). It cannot run in the VMMs' chroot jail: a chrooted process may
// not make the user namespace passt's own sandbox needs. It starts in the link directory and
// binds its socket by a relative name, so it needs no access to the directories above.
// docs/security.md lists it with the VMMs.
//
// When qvmd runs as a systemd service, whose unit allows it no IP socket at all, passt runs in a
// transient unit of its own (systemd-run) that may use IP and nothing else qvmd's unit forbids.
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { spawnDetached } from "../vmm/process.js";
import type { VmmUser } from "../vmm/driver.js";
import { PASST_GUEST, UPLINK_MAC } from "./addresses.js";
import { netDirOf } from "./link-files.js";

const PASST_SOCKET = "passt.sock";
export const passtSocketOf = (runtimeDir: string) => path.join(netDirOf(runtimeDir), PASST_SOCKET);

export function passtBinary(): string {
  const candidates = [process.env.QVM_PASST, "/usr/bin/passt", "/usr/local/bin/passt"].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new QvmError("MISSING_DEPENDENCY", "passt is not installed (uplink passt needs it): run `bash scripts/install-system-deps.sh`, or `apt-get install passt`");
  return found;
}

/** passt's command line: IPv4 only, fixed guest addresses, no port forwarded into sys-net. */
export function passtArgs(socket: string): string[] {
  return [
    "--foreground", "--quiet", "--one-off", "--ipv4-only",
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

/** True when qvmd is a systemd service (systemd sets INVOCATION_ID for the processes of a unit). */
export function underSystemd(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.INVOCATION_ID && existsSync("/run/systemd/system");
}

export const passtUnitOf = (domain: string) => `qvm-passt-${domain}`;

/** systemd-run's command line for passt's own transient unit: IP allowed, little else. */
export function passtUnitArgv(domain: string, netDir: string, command: string[]): string[] {
  const props = [
    `ReadWritePaths=${netDir}`,
    "CollectMode=inactive-or-failed",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    // What passt needs to drop to its uid and build its own sandbox.
    "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SETUID CAP_SETGID CAP_SETPCAP CAP_SYS_CHROOT",
  ];
  return ["systemd-run", "--quiet", `--unit=${passtUnitOf(domain)}`, `--working-directory=${netDir}`, ...props.map((p) => `--property=${p}`), ...command];
}

/** passt's command, run in the link directory (its socket name is relative to it). */
export function passtCommand(user: VmmUser | undefined, passt: string): string[] {
  return [passt, ...(user ? ["--runas", `${user.uid}:${user.gid}`] : []), ...passtArgs(PASST_SOCKET)];
}

/** Starts passt for a domain and waits for its socket; returns how to stop it. */
export async function startPasst(domain: string, runtimeDir: string, logDir: string, user: VmmUser | undefined): Promise<() => void> {
  const socket = passtSocketOf(runtimeDir);
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const log = path.join(logDir, "passt.log");
  let stop: () => void;
  let exited = false;
  if (underSystemd()) {
    const [file, ...args] = passtUnitArgv(domain, netDirOf(runtimeDir), passtCommand(user, passtBinary()));
    const proc = await spawnDetached(file!, args, log);
    const r = await proc.exited;
    if (r.code !== 0) throw new QvmError("VMM_FAILED", `systemd-run could not start passt for ${domain}; see ${log} and \`journalctl -u ${passtUnitOf(domain)}\``);
    stop = () => void spawnDetached("systemctl", ["stop", passtUnitOf(domain)], log).catch(() => {});
  } else {
    const [file, ...args] = passtCommand(user, passtBinary());
    const proc = await spawnDetached(file!, args, log, { cwd: netDirOf(runtimeDir) });
    void proc.exited.then(() => (exited = true));
    stop = () => {
      try {
        process.kill(proc.pid, "SIGTERM");
      } catch {
        // already gone
      }
    };
  }
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (exited) throw new QvmError("VMM_FAILED", `passt exited at start; see ${log}`);
    if (Date.now() > deadline) {
      stop();
      throw new QvmError("VMM_FAILED", `passt did not open ${socket} within 10 s; see ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return stop;
}
