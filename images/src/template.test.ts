// The template recipe and what customize() writes into a root, without mmdebstrap: the file
// layout is installed into an empty directory (with stand-ins for the agent's bundles) and
// checked; the shell scripts and units are checked with sh -n, shellcheck and systemd-analyze.
// Booting the result is tests/e2e's job.
import { spawnSync } from "node:child_process";
import { cpSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_TEMPLATES, GUI_PACKAGES, MASKED_UNITS, NET_SERVICES_FILES, QREXEC_TOOLS, TEMPLATES, guestAgentFiles, installGuestFiles, type GuestAgentFiles } from "./template.js";


let dir = "";
let root = "";
let files: GuestAgentFiles;

const NEW_UNITS = ["qvm-updates-proxy.service", "qvm-updates-proxy-forwarder.socket", "qvm-updates-proxy-forwarder@.service"];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-template-"));
  // The bundles are build outputs: stand-ins keep this test independent of `npm run build`.
  const agent = path.join(dir, "qvm-agent.cjs");
  const qrexecTools = path.join(dir, "qvm-qrexec.cjs");
  writeFileSync(agent, "// agent\n");
  writeFileSync(qrexecTools, "// tools\n");
  files = { ...guestAgentFiles(), agent, qrexecTools };
  root = path.join(dir, "root");
  // What the packages leave enabled after mmdebstrap (Debian enables tinyproxy and logrotate's timer).
  const etc = path.join(root, "etc/systemd/system");
  mkdirSync(path.join(etc, "multi-user.target.wants"), { recursive: true });
  mkdirSync(path.join(etc, "timers.target.wants"), { recursive: true });
  for (const [wants, unit] of [["multi-user.target.wants", "tinyproxy.service"], ["timers.target.wants", "logrotate.timer"], ["multi-user.target.wants", "other.service"]]) {
    spawnSync("ln", ["-s", `/lib/systemd/system/${unit}`, path.join(etc, wants!, unit!)]);
  }
  installGuestFiles(root, files);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("debian-12 recipe", () => {
  it("has USB/IP's tools (usbip) for USB over qrexec", () => {
    expect(TEMPLATES["debian-12"]!.packages).toContain("usbip");
  });

  it("has the net domain's tools and the updates proxy", () => {
    expect(TEMPLATES["debian-12"]!.packages).toEqual(expect.arrayContaining(["nftables", "conntrack", "tinyproxy", "curl", "iputils-ping", "socat", "iproute2"]));
    expect(new Set(TEMPLATES["debian-12"]!.packages).size).toBe(TEMPLATES["debian-12"]!.packages.length);
  });

  it("masks the distribution's tinyproxy and nftables services (and logrotate's timer) and drops the links that enabled them", () => {
    const etc = path.join(root, "etc/systemd/system");
    for (const unit of ["tinyproxy.service", "nftables.service", "logrotate.timer"]) {
      expect(MASKED_UNITS).toContain(unit);
      expect(readlinkSync(path.join(etc, unit))).toBe("/dev/null");
    }
    expect(lstatSync(path.join(etc, "multi-user.target.wants/tinyproxy.service"), { throwIfNoEntry: false })).toBeUndefined();
    expect(lstatSync(path.join(etc, "timers.target.wants/logrotate.timer"), { throwIfNoEntry: false })).toBeUndefined();
    expect(readlinkSync(path.join(etc, "multi-user.target.wants/other.service"))).toBe("/lib/systemd/system/other.service");
  });

  it("installs every unit, and enables only the agent", () => {
    const etc = path.join(root, "etc/systemd/system");
    for (const name of readdirSync(files.systemdDir)) expect(readFileSync(path.join(etc, name))).toEqual(readFileSync(path.join(files.systemdDir, name)));
    for (const unit of NEW_UNITS) expect(readdirSync(files.systemdDir)).toContain(unit);
    const enabled = readdirSync(etc)
      .filter((d) => /\.(wants|requires)$/.test(d))
      .flatMap((d) => readdirSync(path.join(etc, d)).map((u) => `${d}/${u}`));
    expect(enabled.sort()).toEqual(["multi-user.target.wants/other.service", "sysinit.target.wants/qvm-agent.service"]);
    // The new units cannot be enabled by accident either: they have no [Install] section.
    for (const unit of NEW_UNITS) expect(readFileSync(path.join(etc, unit), "utf8")).not.toMatch(/^\[Install\]/m);
  });

  it("installs qvm-net-services, qubes.UpdatesProxy and the proxy's configuration where the units and scripts look", () => {
    expect(readdirSync(files.netServicesDir).sort()).toEqual(Object.keys(NET_SERVICES_FILES).sort());
    for (const [name, { dest, mode }] of Object.entries(NET_SERVICES_FILES)) {
      const st = statSync(path.join(root, dest));
      expect([dest, st.mode & 0o7777]).toEqual([dest, mode]);
      expect(readFileSync(path.join(root, dest))).toEqual(readFileSync(path.join(files.netServicesDir, name)));
    }
    expect(statSync(path.join(root, "etc/qubes-rpc/qubes.UpdatesProxy")).mode & 0o777).toBe(0o755);
    const etc = path.join(root, "etc/systemd/system");
    const proxyUnit = readFileSync(path.join(etc, "qvm-updates-proxy.service"), "utf8");
    expect(proxyUnit).toMatch(/^ExecStart=\/usr\/bin\/tinyproxy -d -c \/etc\/tinyproxy\/qvm-updates-proxy\.conf$/m);
    expect(proxyUnit).toMatch(/^ConditionPathExists=\/run\/qvm-service\/updates-proxy$/m);
    const conf = readFileSync(path.join(root, "etc/tinyproxy/qvm-updates-proxy.conf"), "utf8");
    expect(conf).toMatch(/^Filter "\/etc\/tinyproxy\/qvm-updates-proxy\.filter"$/m);
    const forwarder = readFileSync(path.join(etc, "qvm-updates-proxy-forwarder@.service"), "utf8");
    expect(forwarder).toMatch(/^ExecStart=\/usr\/bin\/qrexec-client-vm @default qubes\.UpdatesProxy$/m);
    expect(QREXEC_TOOLS).toContain("qrexec-client-vm");
    const socket = readFileSync(path.join(etc, "qvm-updates-proxy-forwarder.socket"), "utf8");
    expect(socket).toMatch(/^ConditionPathExists=\/run\/qvm-service\/updates-client$/m);
    expect(socket).toMatch(/^ConditionPathExists=!\/run\/qvm-service\/updates-proxy$/m);
    // The flag files the units test are the ones the scripts write and read.
    const script = readFileSync(path.join(files.netServicesDir, "qvm-net-services"), "utf8");
    expect(script).toContain("flags=$root/run/qvm-service");
    expect(readFileSync(path.join(files.rpcDir, "qubes.UpdatesProxy"), "utf8")).toContain("flag=${QVM_TEST_ROOT:-}/run/qvm-service/updates-proxy");
  });

  it("installs the USB scripts in /usr/lib/qvm, qubes.USB in /etc/qubes-rpc and its socket mode in /etc/qubes/rpc-config", () => {
    expect(readdirSync(files.usbDir).sort()).toEqual(["usb-attach", "usb-import", "usb-release"]);
    for (const name of readdirSync(files.usbDir)) {
      const dest = path.join(root, "usr/lib/qvm", name);
      expect([name, statSync(dest).mode & 0o7777]).toEqual([name, 0o755]);
      expect(readFileSync(dest)).toEqual(readFileSync(path.join(files.usbDir, name)));
    }
    expect(statSync(path.join(root, "etc/qubes-rpc/qubes.USB")).mode & 0o7777).toBe(0o755);
    expect(readdirSync(files.rpcConfigDir)).toEqual(["qubes.USB"]);
    const conf = path.join(root, "etc/qubes/rpc-config/qubes.USB");
    expect(statSync(conf).mode & 0o7777).toBe(0o644);
    expect(readFileSync(conf, "utf8")).toMatch(/^qvm-socket=yes$/m);
    // Nothing of them lands among the services, and the lookup script stays in /usr/lib/qvm.
    expect(readdirSync(path.join(root, "etc/qubes-rpc")).filter((n) => n.startsWith("usb-") || n === "qrexec-run")).toEqual([]);
    expect(statSync(path.join(root, "usr/lib/qvm/qrexec-run")).mode & 0o7777).toBe(0o755);
    // usb-attach runs the tools the template has: qrexec-client-vm and socat.
    const attach = readFileSync(path.join(files.usbDir, "usb-attach"), "utf8");
    expect(attach).toContain('qrexec-client-vm "$backend" "qubes.USB+$busid" socat STDIO "EXEC:$lib/usb-import $state/port"');
    expect(QREXEC_TOOLS).toContain("qrexec-client-vm");
    expect(TEMPLATES["debian-12"]!.packages).toEqual(expect.arrayContaining(["socat", "bash", "util-linux", "kmod"]));
  });

  it("the updates proxy listens on loopback only, adds no Via header, and allows CONNECT to 443 only", () => {
    const conf = readFileSync(path.join(files.netServicesDir, "tinyproxy-updates.conf"), "utf8");
    const directives = conf
      .split("\n")
      .filter((l) => l.trim() && !l.startsWith("#"))
      .map((l) => l.trim());
    expect(directives).toEqual(expect.arrayContaining(["Port 8082", "Listen 127.0.0.1", "Allow 127.0.0.1", "DisableViaHeader Yes", "XTinyproxy No", "ConnectPort 443"]));
    expect(directives.filter((d) => /^(ConnectPort|Allow|Listen|Port|Upstream|BasicAuth)\b/.test(d)).sort()).toEqual(["Allow 127.0.0.1", "ConnectPort 443", "Listen 127.0.0.1", "Port 8082"]);
    expect(directives.some((d) => /^(User|Group|LogFile|PidFile|Syslog)\b/.test(d))).toBe(false);
  });
});

describe("debian-12-gui recipe", () => {
  it("is debian-12 plus the compositor, VNC server, terminal, font and clipboard tools, which debian-12 lacks", () => {
    const base = TEMPLATES["debian-12"]!;
    const gui = TEMPLATES["debian-12-gui"]!;
    expect(GUI_PACKAGES).toEqual(["sway", "wayvnc", "foot", "fonts-dejavu-core", "wl-clipboard"]);
    expect(gui.packages).toEqual([...base.packages, ...GUI_PACKAGES]);
    expect(new Set(gui.packages).size).toBe(gui.packages.length);
    expect(base.packages.filter((p) => GUI_PACKAGES.includes(p))).toEqual([]);
    expect({ ...gui, packages: base.packages, onDemand: undefined }).toEqual({ ...base, onDemand: undefined });
    // socat (the window's vsock listener) and setpriv (util-linux) come from debian-12 itself.
    expect(base.packages).toEqual(expect.arrayContaining(["socat", "util-linux"]));
  });

  it("is built only when named; debian-12's recipe has no key it did not have before (its image stays cached)", () => {
    expect(DEFAULT_TEMPLATES).toEqual(["debian-12"]);
    expect(Object.keys(TEMPLATES["debian-12"]!).sort()).toEqual(["packages", "rootSizeMiB", "suite"]);
  });
});

describe("scripts and units", () => {
  const scripts = () => [
    path.join(files.netServicesDir, "qvm-net-services"),
    ...readdirSync(files.rpcDir).map((n) => path.join(files.rpcDir, n)),
    ...readdirSync(files.usbDir).map((n) => path.join(files.usbDir, n)),
  ];
  /** The shell a script names on its first line: sh (dash in the template) or bash. */
  const shellOf = (s: string) => {
    const first = readFileSync(s, "utf8").split("\n", 1)[0];
    if (first === "#!/bin/sh") return "sh";
    if (first === "#!/bin/bash") return "bash";
    throw new Error(`${s}: neither #!/bin/sh nor #!/bin/bash: ${first}`);
  };

  it("the shell scripts parse (sh -n, bash -n)", () => {
    expect(scripts().filter((s) => shellOf(s) === "bash").map((s) => path.basename(s))).toEqual(["usb-import"]);
    for (const s of scripts()) {
      const r = spawnSync(shellOf(s), ["-n", s], { encoding: "utf8" });
      expect([s, r.status, r.stderr]).toEqual([s, 0, ""]);
    }
  });

  it("the shell scripts pass shellcheck", () => {
    for (const shell of ["sh", "bash"]) {
      const r = spawnSync("shellcheck", ["-s", shell, ...scripts().filter((s) => shellOf(s) === shell)], { encoding: "utf8" });
      expect(r.stdout + r.stderr).toBe("");
      expect(r.status).toBe(0);
    }
  });

  it("the units pass systemd-analyze verify in the installed root", () => {
    // systemd's own units from the host, and stand-ins for the programs the units run.
    const vroot = path.join(dir, "verify-root");
    cpSync(root, vroot, { recursive: true, verbatimSymlinks: true });
    cpSync("/usr/lib/systemd/system", path.join(vroot, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
    for (const prog of ["tinyproxy", "node"]) writeFileSync(path.join(vroot, "usr/bin", prog), "#!/bin/sh\n", { mode: 0o755 });
    const units = readdirSync(files.systemdDir).map((u) => u.replace(/@\./, "@1."));
    const r = spawnSync("systemd-analyze", ["verify", `--root=${vroot}`, "--man=no", ...units], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });
});
