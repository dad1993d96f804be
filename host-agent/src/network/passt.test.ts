import { describe, expect, it } from "vitest";
import { passtArgs, passtCommand, passtUnitArgv, underSystemd } from "./passt.js";

describe("passt's command line", () => {
  it("forwards no port into sys-net, maps no host loopback, exits with its one VMM, IPv4 only", () => {
    const args = passtArgs("passt.sock");
    expect(args).toEqual(expect.arrayContaining(["--one-off", "--ipv4-only", "--no-map-gw", "--foreground"]));
    expect(args.join(" ")).toContain("--tcp-ports none --udp-ports none");
    expect(args.join(" ")).toContain("--dns-forward 10.0.2.3");
  });
  it("runs as the domain's VMM uid when qvmd jails, by a relative socket name", () => {
    const cmd = passtCommand({ uid: 900000007, gid: 900000007 }, "/usr/bin/passt");
    expect(cmd.slice(0, 3)).toEqual(["/usr/bin/passt", "--runas", "900000007:900000007"]);
    expect(cmd[cmd.indexOf("--socket") + 1]).toBe("passt.sock");
    expect(passtCommand(undefined, "/usr/bin/passt")).not.toContain("--runas");
  });
  it("under systemd, runs in a unit of its own that may write only its link directory", () => {
    const argv = passtUnitArgv("sys-net", "/run/qvm/domains/sys-net/net", ["/usr/bin/passt", "-f"]);
    expect(argv.slice(0, 3)).toEqual(["systemd-run", "--quiet", "--unit=qvm-passt-sys-net"]);
    expect(argv).toContain("--working-directory=/run/qvm/domains/sys-net/net");
    expect(argv).toContain("--property=ReadWritePaths=/run/qvm/domains/sys-net/net");
    expect(argv).toContain("--property=ProtectSystem=strict");
    expect(argv.slice(-2)).toEqual(["/usr/bin/passt", "-f"]);
    expect(underSystemd({})).toBe(false);
  });
});
