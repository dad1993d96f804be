import { Args, Flags } from "@oclif/core";
import { QvmError, formatRuleApi, parseRuleApi, parseRuleCli, type FirewallRule } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { applyFirewallEdit, formatFirewallList, type FirewallEdit } from "../lib/firewall-edit.js";

const ACTIONS: Record<string, "list" | "add" | "del" | "reset"> = { list: "list", ls: "list", add: "add", del: "del", remove: "del", rm: "del", reset: "reset" };

const SYNTAX = "<action> [<dsthost> [<proto> [<dstports>|<icmptype>]]] mixed with key=value elements";

export default class Firewall extends QvmCommand {
  static override summary = "List or change a domain's firewall rules.";
  static override description = `Like qvm-firewall. A domain's rules are an ordered list: the first rule that matches a connection decides, and what no rule accepts is dropped. The domain's netvm enforces them. A domain never given rules has one, "action=accept" (everything allowed).

  qvm firewall VM [list] [--raw|--json]   the rules, numbered from 0
  qvm firewall VM add [--before N] RULE   add at the end, or before rule N
  qvm firewall VM del --rule-no N         delete rule N
  qvm firewall VM del RULE                delete the rule written so
  qvm firewall VM reset                   back to the one rule action=accept
  qvm firewall VM --reload                have the netvm apply the rules again

A RULE is one or more words: key=value elements, and words without "=" that fill, in order, action, dsthost, proto and dstports (icmptype after icmp). Quote a comment with spaces.

  action=accept|drop  required
  dsthost=HOST        an IPv4/IPv6 address (/prefix allowed) or a host name
  dst4=, dst6=        the same as dsthost
  proto=tcp|udp|icmp
  dstports=N|N-M      only with proto tcp or udp
  icmptype=N          0-255, only with proto icmp
  specialtarget=dns   the netvm's DNS servers (port 53)
  expire=T|+N         UNIX time or +N seconds from now, when the rule ends
  comment=TEXT        letters, digits, spaces and : ; , . / - _ [ ]

Each change gets the rules from qvmd, edits them here and sets the whole list back; qvmd checks every rule again and changes nothing if one is wrong. Expired rules are not shown, and the next change drops them. Host names are resolved by the netvm when it applies the rules, not at each connection.

--raw prints the rules as the admin API carries them (one "key=value ..." line each); --json prints them as objects. --reload has the netvm apply the rules again (and resolve host names again), after the change if there is one; alone it prints nothing.`;
  static override usage = ["VM [list] [--raw | --json]", "VM add [--before N] RULE...", "VM del --rule-no N", "VM del RULE...", "VM reset", "VM --reload"];
  static override examples = [
    example("work", "The rules of work, numbered."),
    example("work add accept example.com tcp 443", "Allow HTTPS to one host (the positional form)."),
    example("work add --before 0 action=drop dst4=192.168.0.0/16", "Drop the local network, ahead of every other rule."),
    example("work add accept specialtarget=dns", "Allow DNS."),
    example("work add accept 10.0.0.1 tcp 22 expire=+3600 'comment=ssh for an hour'", "A rule that expires in an hour."),
    example("work del --rule-no 0"),
    example("work del accept example.com tcp 443", "Delete the rule written so."),
    example("work add drop", "End with an explicit drop (everything else)."),
    example("work reset", "Back to allowing everything."),
    example("work list --raw", "The rules as admin API lines."),
  ];
  static override strict = false;
  static override args = {
    vm: Args.string({ description: "The domain.", required: true }),
    action: Args.string({ description: "list (default), add, del or reset.", required: false }),
    rule: Args.string({ description: `add, del: the rule, ${SYNTAX}.`, required: false }),
  };
  static override flags = {
    before: Flags.integer({ description: "add: insert the rule before rule N (0: first); default: at the end.", min: 0, helpValue: "N" }),
    "rule-no": Flags.integer({ description: "del: delete rule N (as `list` numbers them).", min: 0, helpValue: "N" }),
    raw: Flags.boolean({ description: "list: print the rules as admin API lines." }),
    json: Flags.boolean({ description: "list: print the rules as JSON objects (action, dsthost, proto, dstports [low, high], icmptype, specialtarget, expire, comment)." }),
    reload: Flags.boolean({ char: "r", description: "Make the netvm apply the rules again (after the change, if any)." }),
  };

  async run(): Promise<void> {
    const { args, argv, flags } = await this.parse(Firewall);
    const vm = args.vm;
    const actionWord = args.action ?? "list";
    const action = ACTIONS[actionWord];
    if (!action) throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(actionWord)}: use list, add, del or reset (qvm firewall VM ACTION ...)`);
    const words = (argv as string[]).slice(2);
    const misplaced = (
      [
        ["--before", flags.before !== undefined, "add"],
        ["--rule-no", flags["rule-no"] !== undefined, "del"],
        ["--raw", flags.raw, "list"],
        ["--json", flags.json, "list"],
      ] as const
    ).find(([, given, only]) => given && action !== only);
    if (misplaced) throw new QvmError("INVALID_ARGUMENT", `${misplaced[0]} goes with ${misplaced[2]}, not ${actionWord}`);
    if (flags.raw && flags.json) throw new QvmError("INVALID_ARGUMENT", "give --raw or --json, not both");

    const edit = this.editOf(vm, action, words, flags.before, flags["rule-no"]);
    const admin = await this.admin();
    if (edit) {
      const current = (await admin.getFirewall({ domain: vm })).rules.map(readRule);
      const rules = applyFirewallEdit(vm, current, edit);
      await admin.setFirewall({ domain: vm, rules: rules.map((r) => formatRuleApi(r)) });
    } else if (!flags.reload || args.action !== undefined) {
      // `qvm firewall VM --reload` only reloads; with `list` it lists too.
      const lines = (await admin.getFirewall({ domain: vm })).rules;
      if (flags.raw) this.print(lines.map((l) => `${l}\n`).join(""));
      else if (flags.json) this.printJson(lines.map(readRule));
      else this.print(formatFirewallList(lines.map(readRule), Date.now() / 1000));
    }
    if (flags.reload) await admin.reloadFirewall({ domain: vm });
  }

  /** The change an action asks for; undefined for list. Usage errors say what to write instead. */
  private editOf(vm: string, action: "list" | "add" | "del" | "reset", words: string[], before: number | undefined, ruleNo: number | undefined): FirewallEdit | undefined {
    switch (action) {
      case "list":
        if (words.length) throw new QvmError("INVALID_ARGUMENT", `list takes no rule (got ${JSON.stringify(words.join(" "))}); to delete one: qvm firewall ${vm} del RULE...`);
        return undefined;
      case "reset":
        if (words.length) throw new QvmError("INVALID_ARGUMENT", `reset takes no rule (got ${JSON.stringify(words.join(" "))}): it sets the one rule action=accept`);
        return { kind: "reset" };
      case "add":
        if (!words.length) throw new QvmError("INVALID_ARGUMENT", `add needs a RULE: ${SYNTAX}, e.g. qvm firewall ${vm} add accept example.com tcp 443`);
        return { kind: "add", rule: cliRule(words), before };
      case "del":
        if (ruleNo !== undefined && words.length) throw new QvmError("INVALID_ARGUMENT", "del takes --rule-no N or a RULE, not both");
        if (ruleNo !== undefined) return { kind: "del", ruleNo };
        if (!words.length) throw new QvmError("INVALID_ARGUMENT", `del needs --rule-no N or the RULE as \`qvm firewall ${vm} list\` shows it`);
        return { kind: "del", rule: cliRule(words) };
    }
  }
}

/** A rule from the command line; a bad element is named with the syntax that fixes it. */
function cliRule(words: string[]): FirewallRule {
  try {
    return parseRuleCli(words, Math.floor(Date.now() / 1000));
  } catch (err) {
    if (err instanceof QvmError) throw new QvmError(err.code, `${err.message} (a rule is ${SYNTAX}; see qvm firewall --help)`);
    throw err;
  }
}

/** A line qvmd sent; one this qvm cannot read means the two are different versions. */
function readRule(line: string): FirewallRule {
  try {
    return parseRuleApi(line);
  } catch (err) {
    throw new QvmError("FAILED_PRECONDITION", `qvmd sent a firewall rule this qvm cannot read (${(err as Error).message}): is qvm the same version as qvmd?`);
  }
}
