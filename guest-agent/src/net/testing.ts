// Test support: the configurations the tests apply (sys-net with an uplink and two clients,
// sys-firewall without one, an AppVM), and a fake domain that records commands. Only tests import it.
import type { CommandOptions, CommandResult, CommandRunner } from "./commands.js";
import type { GuestNetConfig } from "./config.js";
import type { AppliedState, LinkInfo, NetHost } from "./host.js";

export const SLOT_MACS = ["52:54:00:00:01:00", "52:54:00:00:01:01", "52:54:00:00:01:02"];
export const OWN_MAC = "52:54:00:00:00:01";
export const CLIENT_MAC = "00:16:3e:5e:6c:00";

/** work: DNS, one web site by name, ssh to a network, ICMP but not ping, nothing else. */
export const WORK_RULES = [
  "action=accept specialtarget=dns",
  "action=accept dsthost=example.com proto=tcp dstports=443",
  "action=accept dst4=192.168.0.0/16 proto=tcp dstports=22-23",
  "action=drop proto=icmp icmptype=8",
  "action=accept proto=icmp icmptype=255",
  "action=accept proto=icmp",
  "action=accept dst6=2001:db8::/32",
  "action=drop",
];

export function sysNet(): GuestNetConfig {
  return {
    netvm: {
      gateway: "10.137.0.1",
      uplink: { mac: OWN_MAC, address: "192.168.122.50", prefix: 24, gateway: "192.168.122.1", dns: ["192.168.122.1", "9.9.9.9"] },
      slotMacs: [...SLOT_MACS],
      links: [
        { slotMac: SLOT_MACS[0] ?? "", clientIp: "10.137.0.5", clientMac: CLIENT_MAC, firewall: [...WORK_RULES] },
        { slotMac: SLOT_MACS[2] ?? "", clientIp: "10.137.0.6", clientMac: CLIENT_MAC, firewall: ["action=accept"] },
      ],
    },
  };
}

export function sysFirewall(): GuestNetConfig {
  return {
    client: { mac: OWN_MAC, ip: "10.137.0.6", gateway: "10.137.0.1", gatewayMac: "fe:ff:ff:ff:ff:ff", dns: ["10.139.1.1", "10.139.1.2"] },
    netvm: {
      gateway: "10.137.0.6",
      slotMacs: SLOT_MACS.slice(0, 2),
      links: [{ slotMac: SLOT_MACS[1] ?? "", clientIp: "10.137.0.7", clientMac: CLIENT_MAC, firewall: ["action=accept proto=tcp dstports=80", "action=drop"] }],
    },
  };
}

export function appVm(): GuestNetConfig {
  return { client: { mac: OWN_MAC, ip: "10.137.0.7", gateway: "10.137.0.6", gatewayMac: "fe:ff:ff:ff:ff:ff", dns: ["10.139.1.1", "10.139.1.2"] } };
}

export interface Call {
  command: string;
  args: readonly string[];
  input?: string;
}

/** A fake domain: links renamed by the `ip link set ... name` commands it sees, files in memory. */
export class FakeDomain implements NetHost {
  calls: Call[] = [];
  resolvConf: string | undefined;
  sysctl = new Map<string, string>();
  state: AppliedState | undefined;
  /** Answers by command line prefix ("nft -f -" → result); the default is success with no output. */
  answers = new Map<string, (call: Call) => Partial<CommandResult>>();
  dns = new Map<string, string[]>([["example.com", ["93.184.216.34"]]]);

  constructor(public links: LinkInfo[]) {}

  run: CommandRunner = async (command: string, args: readonly string[], options?: CommandOptions) => {
    const call: Call = { command, args, ...(options?.input === undefined ? {} : { input: options.input }) };
    this.calls.push(call);
    const line = [command, ...args].join(" ");
    if (command === "ip" && args[0] === "link" && args[1] === "set" && args[4] === "name") {
      const link = this.links.find((l) => l.name === args[3]);
      if (link) link.name = args[5] ?? link.name;
    }
    for (const [prefix, answer] of this.answers) if (line.startsWith(prefix)) return { code: 0, stdout: "", stderr: "", ...answer(call) };
    return { code: 0, stdout: command === "ip" && args[0] === "-j" ? "[]" : "", stderr: "" };
  };

  /** The command lines run, stdin left out; an `ip -batch` counts as the commands it read. */
  lines(): string[] {
    return this.calls.flatMap((c) =>
      c.command === "ip" && c.args.includes("-batch") ? (c.input ?? "").split("\n").filter(Boolean).map((l) => `ip ${l}`) : [[c.command, ...c.args].join(" ")],
    );
  }

  listLinks = async () => this.links.map((l) => ({ ...l }));
  writeResolvConf = async (text: string) => {
    this.resolvConf = text;
  };
  setSysctl = async (key: string, value: string) => {
    this.sysctl.set(key, value);
  };
  resolve = async (name: string) => {
    const found = this.dns.get(name);
    if (!found) throw new Error(`getaddrinfo ENOTFOUND ${name}`);
    return found;
  };
  readState = async () => this.state;
  writeState = async (state: AppliedState) => {
    this.state = state;
  };
}
