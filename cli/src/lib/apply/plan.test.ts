// The plan of `qvm apply`, without a qvmd: the order of creation, what changes a property, a
// feature, a tag or a firewall, what the record on each domain makes reset or removed, what is
// left alone and listed, and idempotence (carrying a plan out on a model of qvmd, then planning
// again, gives nothing to do).
import { describe, expect, it } from "vitest";
import { declaredFileSchema, type DeclaredFile } from "@qvm/protocol/declared";
import { describeAction, describeLeftAlone, formatRecord, parseRecord, planApply, type ApplyAction, type CurrentDomain, type CurrentState } from "./plan.js";

const MARKER = "qvm-apply.declared";

const declare = (data: unknown): DeclaredFile => declaredFileSchema.parse(data);

/** A domain as qvmd would show it: the given own properties, everything else a default. */
function domain(name: string, more: Partial<Omit<CurrentDomain, "properties">> & { own?: Record<string, string>; inherited?: Record<string, string> } = {}): CurrentDomain {
  const { own = {}, inherited = {}, ...rest } = more;
  return {
    name,
    class: "AppVM",
    features: {},
    tags: [],
    firewall: ["action=accept"],
    ...rest,
    properties: {
      ...Object.fromEntries(Object.entries({ memory: "400", vcpus: "2", netvm: "sys-firewall", ...inherited }).map(([k, v]) => [k, { value: v, own: false }])),
      ...Object.fromEntries(Object.entries({ label: "red", ...own }).map(([k, v]) => [k, { value: v, own: true }])),
    },
  };
}

const empty = (): CurrentState => ({ domains: [], others: [] });

/** What qvmd would hold after `actions` (the parts the plan reads). */
function carryOut(state: CurrentState, actions: ApplyAction[]): CurrentState {
  const next: CurrentState = structuredClone(state);
  const get = (name: string) => next.domains.find((d) => d.name === name)!;
  for (const a of actions) {
    switch (a.kind) {
      case "create-domain": {
        const own: Record<string, string> = { label: a.label, ...a.properties };
        if (a.template && (a.class === "AppVM" || a.class === "DispVM")) own.template = a.template;
        next.domains.push(domain(a.domain, { class: a.class, own }));
        break;
      }
      case "set-property":
        get(a.domain).properties[a.name] = { value: a.value, own: true };
        break;
      case "reset-property":
        get(a.domain).properties[a.name] = { value: "(default)", own: false };
        break;
      case "set-feature":
        get(a.domain).features[a.name] = a.value;
        break;
      case "remove-feature":
        delete get(a.domain).features[a.name];
        break;
      case "add-tag":
        get(a.domain).tags.push(a.tag);
        break;
      case "remove-tag":
        get(a.domain).tags = get(a.domain).tags.filter((t) => t !== a.tag);
        break;
      case "set-firewall":
        get(a.domain).firewall = a.rules;
        break;
      case "write-policy":
        next.policy!.texts[a.file] = a.text;
        if (!next.policy!.names.includes(a.file)) next.policy!.names.push(a.file);
        break;
    }
  }
  return next;
}

const lines = (actions: ApplyAction[]) => actions.map(describeAction);

const network = declare({
  version: 1,
  domains: {
    work: {
      label: "blue",
      template: "debian-12",
      netvm: "sys-firewall",
      memory: 800,
      properties: { autostart: true },
      features: { gui: "1", "service.cups": "" },
      tags: ["office"],
      firewall: ["accept example.com tcp 443", "drop"],
    },
    "sys-firewall": { label: "green", template: "debian-12", netvm: "sys-net", properties: { provides_network: true } },
    "sys-net": { label: "red", template: "debian-12", netvm: "", properties: { provides_network: true, uplink: "passt" } },
    "debian-12": { class: "TemplateVM", label: "black" },
  },
  policy: { "30-user.policy": "qubes.Filecopy * work vault ask\n" },
});

describe("planApply: creating", () => {
  it("creates templates before their users and netvms before their clients, each domain's actions together", () => {
    const plan = planApply({ ...empty(), policy: { names: ["90-default.policy"], texts: {} } }, network);
    expect(lines(plan.actions)).toEqual([
      "+ create debian-12 (TemplateVM, label black)",
      "* debian-12 qvm-apply.declared 1 (what apply manages here)",
      '+ create sys-net (AppVM, template debian-12, label red, netvm "", provides_network true, uplink passt)',
      "* sys-net qvm-apply.declared properties=netvm,provides_network,template,uplink (what apply manages here)",
      "+ create sys-firewall (AppVM, template debian-12, label green, netvm sys-net, provides_network true)",
      "* sys-firewall qvm-apply.declared properties=netvm,provides_network,template (what apply manages here)",
      "+ create work (AppVM, template debian-12, label blue, autostart true, memory 800, netvm sys-firewall)",
      '* work qvm-apply.declared "properties=autostart,memory,netvm,template features=gui,service.cups tags=office" (what apply manages here)',
      "+ work feature gui 1",
      '+ work feature service.cups ""',
      "+ work tag office",
      "~ work firewall (1 rule → 2 rules): action=accept dsthost=example.com proto=tcp dstports=443-443; action=drop",
      "+ policy 30-user.policy (new, 1 line)",
    ]);
    // One CreateDomain call each, with the properties in it and the template in its own field.
    expect(plan.actions[2]).toEqual({
      kind: "create-domain",
      domain: "sys-net",
      class: "AppVM",
      template: "debian-12",
      label: "red",
      properties: { netvm: "", provides_network: "true", uplink: "passt" },
    });
    expect(plan.undeclaredPolicyFiles).toEqual([]);
  });

  it("is idempotent: carried out, the same file plans nothing", () => {
    const start: CurrentState = { domains: [], others: ["vault"], policy: { names: ["90-default.policy", "50-mine.policy"], texts: {} } };
    const plan = planApply(start, network);
    const after = carryOut(start, plan.actions);
    const again = planApply(after, network);
    expect(again.actions).toEqual([]);
    expect(again).toEqual({ actions: [], notDeclared: ["vault"], noLongerDeclared: [], undeclaredPolicyFiles: ["50-mine.policy"] });
  });

  it("gives a TemplateVM or StandaloneVM its template as the root to copy, not as a property", () => {
    const file = declare({ version: 1, domains: { mine: { class: "StandaloneVM", label: "red", template: "debian-12" } } });
    const plan = planApply({ domains: [], others: ["debian-12"] }, file);
    expect(plan.actions[0]).toEqual({ kind: "create-domain", domain: "mine", class: "StandaloneVM", template: "debian-12", label: "red", properties: {} });
    expect(planApply(carryOut({ domains: [], others: ["debian-12"] }, plan.actions), file).actions).toEqual([]);
  });

  it("refuses, before doing anything, a template or netvm that is neither declared nor there", () => {
    const file = declare({ version: 1, domains: { work: { label: "red", template: "debian-13", netvm: "sys-fw" } } });
    expect(() => planApply(empty(), file)).toThrow(
      expect.objectContaining({
        code: "NOT_FOUND",
        message: "work: its template debian-13 is neither declared in the file nor an existing domain\nwork: its netvm sys-fw is neither declared in the file nor an existing domain",
      }),
    );
  });
});

describe("planApply: updating", () => {
  const declaredWork = (more: Record<string, unknown> = {}) => declare({ version: 1, domains: { work: { label: "red", template: "debian-12", ...more } } });
  const state = (work: CurrentDomain, others = ["debian-12", "debian-13"]): CurrentState => ({ domains: [work], others });

  it("a changed memory is one action", () => {
    const work = domain("work", { own: { template: "debian-12", memory: "400" }, features: { [MARKER]: "properties=memory,template" } });
    const plan = planApply(state(work), declaredWork({ memory: 800 }));
    expect(plan.actions).toEqual([{ kind: "set-property", domain: "work", name: "memory", value: "800", old: "400" }]);
    expect(lines(plan.actions)).toEqual(["~ work memory 400 → 800"]);
  });

  it("sets a declared value the domain only inherits, so that it is its own", () => {
    const work = domain("work", { own: { template: "debian-12" }, features: { [MARKER]: "properties=template" } });
    const plan = planApply(state(work), declaredWork({ memory: 400 }));
    expect(lines(plan.actions)).toEqual(["* work qvm-apply.declared properties=memory,template (what apply manages here)", "~ work memory 400 → 400"]);
  });

  it("adopts a domain made by other means: marks it and sets what differs, touching nothing else", () => {
    const work = domain("work", { own: { template: "debian-12", vcpus: "4", label: "blue" }, features: { gui: "1" }, tags: ["mine"], firewall: ["action=drop"] });
    const plan = planApply(state(work), declaredWork({ label: "red", memory: 800 }));
    expect(lines(plan.actions)).toEqual([
      "* work qvm-apply.declared properties=memory,template (what apply manages here)",
      "~ work label blue → red",
      "~ work memory 400 → 800",
    ]);
  });

  it("resets, removes and unsets what it declared before and no longer does, and only that", () => {
    const work = domain("work", {
      own: { template: "debian-12", memory: "800", vcpus: "4" },
      features: { [MARKER]: "properties=memory,template features=gui,video tags=office,old", gui: "1", video: "1", other: "x" },
      tags: ["office", "old", "by-hand"],
    });
    const file = declaredWork({ features: { gui: "1" }, tags: ["office"] });
    const plan = planApply(state(work), file);
    expect(lines(plan.actions)).toEqual([
      "~ work memory 800 → default (no longer declared)",
      "- work feature video (no longer declared)",
      "- work tag old (no longer declared)",
      '* work qvm-apply.declared "properties=template features=gui tags=office" (what apply manages here)',
    ]);
    expect(planApply(carryOut(state(work), plan.actions), file).actions).toEqual([]);
  });

  it("records new names before setting them, so a stop halfway still knows what it set", () => {
    const work = domain("work", { own: { template: "debian-12", memory: "800" }, features: { [MARKER]: "properties=memory,template", gui: "1" } });
    const plan = planApply(state(work), declaredWork({ vcpus: 4, features: { video: "1" }, tags: ["new"] }));
    expect(lines(plan.actions)).toEqual([
      '* work qvm-apply.declared "properties=memory,template,vcpus features=video tags=new" (what apply manages here)',
      "~ work vcpus 2 → 4",
      "~ work memory 800 → default (no longer declared)",
      "+ work feature video 1",
      "+ work tag new",
      '* work qvm-apply.declared "properties=template,vcpus features=video tags=new" (what apply manages here)',
    ]);
  });

  it("changes an AppVM's template as a property, and ignores a TemplateVM's (its root was copied once)", () => {
    const work = domain("work", { own: { template: "debian-12" }, features: { [MARKER]: "properties=template" } });
    expect(lines(planApply(state(work), declaredWork({ template: "debian-13" })).actions)).toEqual(["~ work template debian-12 → debian-13"]);
    const t = domain("t2", { class: "TemplateVM", own: {}, features: { [MARKER]: "1" } });
    const file = declare({ version: 1, domains: { t2: { class: "TemplateVM", label: "red", template: "debian-12" } } });
    expect(planApply(state(t), file).actions).toEqual([]);
  });

  it("refuses to change a domain's class, naming each domain", () => {
    const work = domain("work", { class: "TemplateVM", features: { [MARKER]: "1" } });
    expect(() => planApply(state(work), declaredWork())).toThrow(
      expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/^work is a TemplateVM and the file declares an AppVM: a domain's class cannot change/) }),
    );
  });

  it("replaces the firewall only when the declared rules differ from qvmd's canonical lines", () => {
    const work = domain("work", { own: { template: "debian-12" }, features: { [MARKER]: "properties=template" }, firewall: ["action=accept dsthost=example.com proto=tcp dstports=443-443", "action=drop"] });
    expect(planApply(state(work), declaredWork({ firewall: ["accept example.com tcp 443", "drop"] })).actions).toEqual([]);
    expect(planApply(state(work), declaredWork({ firewall: ["accept dsthost=example.com proto=tcp dstports=443"] })).actions).toEqual([
      { kind: "set-firewall", domain: "work", rules: ["action=accept dsthost=example.com proto=tcp dstports=443-443"], old: work.firewall },
    ]);
    expect(lines(planApply(state(work), declaredWork({ firewall: [] })).actions)).toEqual(["~ work firewall (2 rules → 0 rules): none: everything is dropped"]);
    // Not declared: left as it is.
    expect(planApply(state(work), declaredWork()).actions).toEqual([]);
  });

  it("writes a policy file only when its text differs", () => {
    const file = declare({ version: 1, policy: { "30-user.policy": "a\n", "40-x.policy": "b\n" } });
    const plan = planApply({ domains: [], others: [], policy: { names: ["30-user.policy", "40-x.policy", "90-default.policy", "50-y.policy"], texts: { "30-user.policy": "a\n", "40-x.policy": "old\n" } } }, file);
    expect(lines(plan.actions)).toEqual(["~ policy 40-x.policy (changed, 1 line)"]);
    expect(plan.undeclaredPolicyFiles).toEqual(["50-y.policy"]);
  });
});

describe("planApply: what is left alone", () => {
  it("lists domains not declared, and those apply made that the file no longer declares, and deletes nothing", () => {
    const state: CurrentState = {
      domains: [domain("old-work", { features: { [MARKER]: "properties=memory" }, own: { memory: "800" } })],
      others: ["vault", "debian-12"],
    };
    const plan = planApply(state, declare({ version: 1 }));
    expect(plan).toEqual({ actions: [], notDeclared: ["debian-12", "vault"], noLongerDeclared: ["old-work"], undeclaredPolicyFiles: [] });
    expect(describeLeftAlone(plan)).toEqual([
      "= debian-12: not declared (left alone)",
      "= vault: not declared (left alone)",
      "= old-work: no longer declared (left alone; remove it with `qvm remove old-work`)",
    ]);
  });
});

describe("the record in qvm-apply.declared", () => {
  it.each([
    ["1", { properties: [], features: [], tags: [] }],
    ["", { properties: [], features: [], tags: [] }],
    ["properties=memory,netvm features=gui tags=a,b", { properties: ["memory", "netvm"], features: ["gui"], tags: ["a", "b"] }],
    ["tags=a junk=1 properties=", { properties: [], features: [], tags: ["a"] }],
  ])("reads %j", (text, record) => {
    expect(parseRecord(text)).toEqual(record);
  });

  it("writes names sorted and once, and 1 for nothing", () => {
    expect(formatRecord({ properties: ["netvm", "memory", "netvm"], features: [], tags: ["b", "a"] })).toBe("properties=memory,netvm tags=a,b");
    expect(formatRecord({ properties: [], features: [], tags: [] })).toBe("1");
  });

  it("refuses a file whose names do not fit in the feature", () => {
    const features = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`feature-with-a-long-name-number-${i}`, "1"]));
    expect(() => planApply(empty(), declare({ version: 1, domains: { work: { label: "red", template: "debian-12", features } } }))).toThrow(/do not fit in its qvm-apply.declared feature/);
  });
});

describe("describeAction", () => {
  it.each<[ApplyAction, string]>([
    [{ kind: "set-property", domain: "work", name: "netvm", value: "", old: "sys-firewall" }, '~ work netvm sys-firewall → ""'],
    [{ kind: "set-property", domain: "work", name: "kernelopts", value: "a b", old: undefined }, '~ work kernelopts (unset) → "a b"'],
    [{ kind: "reset-property", domain: "work", name: "vcpus", old: "4" }, "~ work vcpus 4 → default (no longer declared)"],
    [{ kind: "set-feature", domain: "work", name: "gui", value: "1", old: "0" }, "~ work feature gui 0 → 1"],
    [{ kind: "remove-feature", domain: "work", name: "gui", old: "1" }, "- work feature gui (no longer declared)"],
    [{ kind: "add-tag", domain: "work", tag: "x" }, "+ work tag x"],
    [{ kind: "remove-tag", domain: "work", tag: "x" }, "- work tag x (no longer declared)"],
    [{ kind: "write-policy", file: "30-user.policy", text: "a\nb\n", exists: true }, "~ policy 30-user.policy (changed, 2 lines)"],
    [{ kind: "write-policy", file: "40-x.policy", text: "", exists: false }, "+ policy 40-x.policy (new, 0 lines)"],
  ])("%j", (action, line) => {
    expect(describeAction(action)).toBe(line);
  });
});

