// The declared-domains file's schema (`qvm apply`): what it takes, what it refuses and why, the
// dependency order, and its JSON Schema (which a NixOS module will check its output against):
// produced without error, and agreeing with the zod schema on the same files.
import Ajv2020 from "ajv/dist/2020.js";
import * as z from "zod";
import { describe, expect, it } from "vitest";
import { declaredCreationOrder, declaredFileSchema, parseDeclaredRule, type DeclaredFile } from "./declared.js";

const example = {
  version: 1,
  domains: {
    "debian-12": { class: "TemplateVM", label: "black" },
    "sys-net": { label: "red", template: "debian-12", netvm: "", properties: { provides_network: true, uplink: "passt" } },
    "sys-firewall": { label: "green", template: "debian-12", netvm: "sys-net", properties: { provides_network: true } },
    work: {
      class: "AppVM",
      label: "blue",
      template: "debian-12",
      netvm: "sys-firewall",
      memory: 800,
      vcpus: 2,
      properties: { autostart: true, kernelopts: "quiet", mac: "00:16:3e:5e:6c:01", vmm: "qemu", maxmem: 0 },
      features: { gui: "1", "service.cups": "" },
      tags: ["office", "project-x"],
      firewall: ["accept example.com tcp 443", "accept specialtarget=dns", "accept 10.0.0.1 tcp 22 comment=ssh to the build box", "drop"],
    },
    dvm: { label: "red", template: "debian-12", properties: { template_for_dispvms: true } },
    "disp-web": { class: "DispVM", label: "red", template: "dvm" },
  },
  policy: { "30-user.policy": "qubes.Filecopy * work vault ask\n" },
};

/** The issues of a file, as "path: message". */
function issues(data: unknown): string[] {
  const r = declaredFileSchema.safeParse(data);
  if (r.success) return [];
  return r.error.issues.map((i) => `${i.path.join(".")}: ${i.code === "invalid_key" ? (i.issues[0]?.message ?? i.message) : i.message}`);
}

const withDomain = (d: Record<string, unknown>, name = "work") => ({ version: 1, domains: { [name]: { label: "red", ...d } } });

describe("the declared file's schema", () => {
  it("takes the documented example, unchanged (no defaults, no transforms)", () => {
    expect(declaredFileSchema.parse(example)).toEqual(example);
    expect(declaredFileSchema.parse({ version: 1 })).toEqual({ version: 1 });
  });

  it("infers the file's type from the schema", () => {
    const file: DeclaredFile = declaredFileSchema.parse(example);
    const memory: number | undefined = file.domains?.work?.memory;
    const autostart: boolean | undefined = file.domains?.work?.properties?.autostart;
    expect([memory, autostart]).toEqual([800, true]);
  });

  it.each([
    [{ version: 2 }, "version: must be 1 (the only version of this format)"],
    [{ version: 1, domain: {} }, ': Unrecognized key: "domain"'],
    [withDomain({ memroy: 800 }), 'domains.work: Unrecognized key: "memroy"'],
    [withDomain({ properties: { memory: 800 } }), 'domains.work.properties: Unrecognized key: "memory"'],
    [withDomain({ memory: 64 }), "domains.work.memory: must be between 128 and 262144"],
    [withDomain({ memory: 800.5 }), "domains.work.memory: must be a whole number"],
    [withDomain({ memory: "800" }), "domains.work.memory: must be a number (memory, in MiB)"],
    [withDomain({ vcpus: 65 }), "domains.work.vcpus: must be between 1 and 64"],
    [withDomain({ label: "pink" }), "domains.work.label: must be one of red, orange, yellow, green, gray, blue, purple, black"],
    [withDomain({ class: "HVM" }), "domains.work.class: must be one of AppVM, TemplateVM, StandaloneVM, DispVM"],
    [withDomain({ netvm: "../x" }), 'domains.work.netvm: must be a domain name (a letter first, then letters, digits, "_", "." or "-", at most 31 characters), or "" for none'],
    [withDomain({ netvm: null }), 'domains.work.netvm: must be a domain name, or "" for none'],
    [withDomain({}, "1work"), 'domains.1work: must be a domain name: a letter first, then letters, digits, "_", "." or "-", at most 31 characters'],
    [withDomain({}, "dom0"), 'domains.dom0: "dom0" is a reserved name'],
    [withDomain({ template: "default" }), 'domains.work.template: "default" is a reserved name'],
    [withDomain({ properties: { autostart: "yes" } }), "domains.work.properties.autostart: must be true or false"],
    [withDomain({ properties: { mac: "00:16:3E:5E:6C:01" } }), "domains.work.properties.mac: must be a MAC address in lowercase, like 00:16:3e:5e:6c:00"],
    [withDomain({ properties: { mac: "01:16:3e:5e:6c:01" } }), "domains.work.properties.mac: must be a unicast address (the first byte even)"],
    [withDomain({ properties: { uplink: "tap:" } }), 'domains.work.properties.uplink: must be "passt", "tap:NAME" (a tap device of up to 15 letters, digits, "." "_" "-") or ""'],
    [withDomain({ properties: { vmm: "xen" } }), "domains.work.properties.vmm: must be one of qemu, cloud-hypervisor"],
    [withDomain({ properties: { kernelopts: "a\nb" } }), "domains.work.properties.kernelopts: must not contain control characters"],
    [withDomain({ class: "TemplateVM", properties: { template_for_dispvms: true } }), "domains.work.properties.template_for_dispvms: cannot be set on a TemplateVM (only on AppVM)"],
    [withDomain({ features: { gui: 1 } }), 'domains.work.features.gui: must be text (quote it: "1")'],
    [withDomain({ features: { "a b": "1" } }), 'domains.work.features.a b: a feature name is 1-64 letters, digits, "_", ".", ":" or "-"'],
    [withDomain({ features: { "qvm-apply.declared": "1" } }), "domains.work.features.qvm-apply.declared: features named qvm-apply.* are qvm apply's own bookkeeping"],
    [withDomain({ tags: ["a b"] }), 'domains.work.tags.0: a tag is 1-64 letters, digits, "_" or "-"'],
    [withDomain({ tags: ["x", "x"] }), "domains.work.tags.1: x is listed twice"],
    [withDomain({ tags: "x" }), "domains.work.tags: Invalid input: expected array, received string"],
    [withDomain({ firewall: ["accept example.com tcp 80", "allow"] }), 'domains.work.firewall.1: action "allow": must be accept or drop'],
    [withDomain({ firewall: ["accept dstports=80"] }), 'domains.work.firewall.0: dstports "80": only with proto=tcp or proto=udp'],
    [withDomain({ firewall: ["accept 10.0.0.1 tcp 22 expire=+3600"] }), "domains.work.firewall.0: a declared rule cannot expire: the file says what is always there (use `qvm firewall VM add ... expire=+N` for a rule that ends)"],
    [withDomain({ firewall: [""] }), 'domains.work.firewall.0: an empty rule: write it as for `qvm firewall VM add`, e.g. "accept example.com tcp 443"'],
    [{ version: 1, policy: { "user.policy": "" } }, "policy.user.policy: a policy file name is a digit, then 0-9 a-z . _ -, ending in .policy (e.g. 30-user.policy)"],
    [{ version: 1, policy: { "../30-x.policy": "" } }, "policy.../30-x.policy: a policy file name is a digit, then 0-9 a-z . _ -, ending in .policy (e.g. 30-user.policy)"],
    [{ version: 1, policy: { "30-x/y.policy": "" } }, "policy.30-x/y.policy: a policy file name is a digit, then 0-9 a-z . _ -, ending in .policy (e.g. 30-user.policy)"],
    [{ version: 1, policy: { "90-default.policy": "" } }, "policy.90-default.policy: is qvm's own policy file, written again at every qvmd start: put your rules in another file, e.g. 30-user.policy"],
    [{ version: 1, policy: { "30-x.policy": "a\0b" } }, "policy.30-x.policy: must not contain NUL characters"],
  ])("refuses %j: %s", (data, expected) => {
    expect(issues(data)).toContain(expected);
  });

  it("reports every problem, not only the first", () => {
    expect(issues(withDomain({ memory: 1, vcpus: 0, label: "pink", colour: "x" }))).toHaveLength(4);
  });

  it("checks the declared domains against each other: a template's class, and loops", () => {
    const file = (domains: Record<string, unknown>) => ({ version: 1, domains });
    expect(issues(file({ t: { label: "red" }, work: { label: "red", template: "t" } }))).toEqual(["domains.work.template: t is declared an AppVM, not a TemplateVM"]);
    expect(issues(file({ dvm: { label: "red" }, d: { class: "DispVM", label: "red", template: "dvm" } }))).toEqual([
      "domains.d.template: dvm is declared an AppVM without template_for_dispvms: true: a DispVM's template is an AppVM with template_for_dispvms: true",
    ]);
    expect(issues(file({ a: { label: "red", netvm: "b" }, b: { label: "red", netvm: "a" } }))).toEqual(["domains.b.netvm: domains depend on each other in a loop: a → b → a"]);
    expect(issues(file({ a: { label: "red", netvm: "a" } }))).toEqual(["domains.a.netvm: domains depend on each other in a loop: a → a"]);
    // A template or netvm the file does not declare is an existing domain's business (checked when applying).
    expect(issues(file({ work: { label: "red", template: "debian-12", netvm: "sys-firewall" } }))).toEqual([]);
  });
});

describe("declared firewall rules", () => {
  it.each([
    ["accept example.com tcp 443", { action: "accept", dsthost: "example.com", proto: "tcp", dstports: [443, 443] }],
    ["  drop   dst4=192.168.0.0/16 ", { action: "drop", dsthost: "192.168.0.0/16" }],
    ["accept specialtarget=dns", { action: "accept", specialtarget: "dns" }],
    ["accept 10.0.0.1 tcp 22 comment=ssh to the build box ", { action: "accept", dsthost: "10.0.0.1/32", proto: "tcp", dstports: [22, 22], comment: "ssh to the build box" }],
    ["action=accept proto=icmp icmptype=8", { action: "accept", proto: "icmp", icmptype: 8 }],
  ])("reads %j as qvm firewall does", (text, rule) => {
    expect(parseDeclaredRule(text)).toEqual(rule);
  });
});

describe("declaredCreationOrder", () => {
  it("puts templates before their users, netvms before their clients, default_dispvm's before, and the rest by name", () => {
    const file = declaredFileSchema.parse({
      version: 1,
      domains: {
        a: { label: "red", template: "t", netvm: "fw", properties: { default_dispvm: "dvm" } },
        fw: { label: "red", template: "t", netvm: "net", properties: { provides_network: true } },
        net: { label: "red", template: "t", netvm: "" },
        t: { class: "TemplateVM", label: "black" },
        dvm: { label: "red", template: "t", properties: { template_for_dispvms: true } },
        z: { label: "red", template: "debian-12" },
      },
    });
    const order = declaredCreationOrder(file);
    expect(order).toEqual(["t", "net", "fw", "dvm", "a", "z"]);
  });
});

describe("the JSON Schema", () => {
  const jsonSchema = z.toJSONSchema(declaredFileSchema);
  const ajv = new Ajv2020.default({ strict: false });
  const validate = ajv.compile(jsonSchema);

  it("converts, and says what the shape and bounds are", () => {
    expect(jsonSchema).toMatchObject({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      required: ["version"],
      additionalProperties: false,
      properties: {
        version: { const: 1 },
        domains: {
          propertyNames: { pattern: "^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$" },
          additionalProperties: {
            required: ["label"],
            additionalProperties: false,
            properties: { memory: { type: "integer", minimum: 128, maximum: 262144 }, properties: { additionalProperties: false } },
          },
        },
        policy: { propertyNames: { pattern: "^[0-9][0-9a-z._-]*\\.policy$" } },
      },
    });
  });

  it("takes the example and refuses what zod refuses for its shape", () => {
    expect(validate(example)).toBe(true);
    for (const bad of [{ version: 2 }, withDomain({ memroy: 800 }), withDomain({ memory: 64 }), withDomain({ label: "pink" }), withDomain({}, "1work"), { version: 1, policy: { "user.policy": "" } }]) {
      expect(validate(bad)).toBe(false);
      expect(declaredFileSchema.safeParse(bad).success).toBe(false);
    }
  });
});
