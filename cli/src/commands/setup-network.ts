import { Flags } from "@oclif/core";
import { isQvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";

export default class SetupNetwork extends QvmCommand {
  static override summary = "Create the net domains sys-net and sys-firewall, as Qubes has them.";
  static override description = `Creates sys-net (label red: the domain that reaches the outside, through its uplink; provides_network, no netvm) and sys-firewall (green: provides_network, netvm sys-net; it enforces each client's \`qvm firewall\` rules), then makes sys-firewall the global default_netvm, so domains that set no netvm go through it. Templates keep no netvm: they update through the updates proxy in sys-net. Domains that exist already are left as they are. Nothing starts unless --start is given.

The uplink is "passt" by default: user-mode networking through passt, a host process that carries sys-net's connections over the host's own sockets (no tap device, no bridge, no address added on the host). "tap:NAME" uses a tap device the administrator made.`;
  static override examples = [
    example("", "Create sys-net and sys-firewall; domains started afterwards are online."),
    example("--start", "Also start them now."),
    example("--template debian-12 --uplink passt"),
  ];
  static override flags = {
    start: Flags.boolean({ description: "Start sys-firewall (and so sys-net) once they exist." }),
    template: Flags.string({ char: "t", description: "The template both domains run from (default: the global default_template).", helpValue: "TEMPLATE" }),
    uplink: Flags.string({ description: 'How sys-net reaches the outside: "passt" or "tap:NAME".', default: "passt", helpValue: "UPLINK" }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(SetupNetwork);
    const admin = await this.admin();
    const p = await loadProtocol();
    const domains: Array<{ name: string; label: string; properties: Record<string, string> }> = [
      { name: "sys-net", label: "red", properties: { provides_network: "true", netvm: "", uplink: flags.uplink } },
      { name: "sys-firewall", label: "green", properties: { provides_network: "true", netvm: "sys-net" } },
    ];
    for (const d of domains) {
      const exists = await admin.getDomain({ name: d.name }).then(
        () => true,
        (err: unknown) => {
          if (isQvmError(err, "NOT_FOUND")) return false;
          throw err;
        },
      );
      if (exists) {
        this.log(`${d.name} exists: left as it is`);
        continue;
      }
      await admin.createDomain({ name: d.name, class: p.domainClassFromWord("AppVM"), template: flags.template ?? "", label: d.label, properties: d.properties });
      this.log(`created ${d.name}`);
    }
    await admin.setProperty({ domain: "", name: "default_netvm", value: "sys-firewall" });
    this.log("default_netvm is sys-firewall");
    if (flags.start) {
      this.log("starting sys-firewall and sys-net");
      await admin.startDomain({ name: "sys-firewall" }).catch((err: unknown) => {
        if (!isQvmError(err, "FAILED_PRECONDITION") || !/already/.test((err as Error).message)) throw err;
      });
    }
  }
}
