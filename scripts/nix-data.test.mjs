// The Nix side's generated data (scripts/gen-nix-data.mjs → nix/generated/qvm-data.json) and the
// domains file nix/module.nix writes (nix/tests/domains-expected.json, which scripts/nix-check.sh
// compares with what the module makes of nix/tests/domains.nix).
import { readFileSync } from "node:fs";
import path from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { OUTPUT, ROOT, collectData, importTs, parseUnit, pickDeclaredSchema, render } from "./gen-nix-data.mjs";

const committed = () => readFileSync(path.join(ROOT, OUTPUT), "utf8");
const expectedDomains = () => JSON.parse(readFileSync(path.join(ROOT, "nix/tests/domains-expected.json"), "utf8"));
const fakeSchema = () => ({ _zod: {}, safeParse: () => ({ success: true }) });

describe("nix/generated/qvm-data.json", () => {
  it("is what scripts/gen-nix-data.mjs makes of the sources now (run it and commit the file when this fails)", async () => {
    expect(committed()).toBe(render(await collectData()));
  });

  it("carries the shipped qvmd unit's hardening, one value per directive, repeated ones as lists", () => {
    const data = JSON.parse(committed());
    expect(data.qvmdUnit.Service.ProtectSystem).toBe("strict");
    expect(data.qvmdUnit.Service.DeviceAllow).toContain("/dev/kvm rw");
    expect(data.qvmdUnit.Install.WantedBy).toBe("multi-user.target");
  });
});

describe("parseUnit", () => {
  it("keeps sections and values, lists a repeated key in order, drops comments", () => {
    const unit = parseUnit("# c\n[Unit]\nDescription=x = y\n; c\n[Service]\nDeviceAllow=/dev/a r\nDeviceAllow=/dev/b rw\nDeviceAllow=/dev/c rw\n");
    expect(unit).toEqual({ Unit: { Description: "x = y" }, Service: { DeviceAllow: ["/dev/a r", "/dev/b rw", "/dev/c rw"] } });
  });

  it("refuses what it would have to guess: continuation lines, a key outside a section", () => {
    expect(() => parseUnit("[Service]\nExecStart=a \\\n  b\n", "u.service")).toThrow(/u.service:2: continuation/);
    expect(() => parseUnit("Key=value\n", "u.service")).toThrow(/u.service:1: expected a \[Section\]/);
  });
});

describe("pickDeclaredSchema", () => {
  it("takes the schema of the whole file, not of one domain", () => {
    const file = fakeSchema();
    expect(pickDeclaredSchema({ declaredDomainSchema: fakeSchema(), declaredFileSchema: file, DECLARED_FILE_VERSION: 1 })).toEqual({ name: "declaredFileSchema", schema: file });
    expect(pickDeclaredSchema({ DECLARED_CONFIG_SCHEMA: file }).name).toBe("DECLARED_CONFIG_SCHEMA");
  });

  it("says there is none, or refuses to choose between two", () => {
    expect(pickDeclaredSchema({ webShellSchema: fakeSchema() })).toBeUndefined();
    expect(() => pickDeclaredSchema({ declaredFileSchema: fakeSchema(), DECLARED_CONFIG_SCHEMA: fakeSchema() })).toThrow(/several schemas/);
  });
});

describe("the domains file nix/module.nix writes", () => {
  it("is accepted by the parser `qvm apply` uses", async () => {
    // The surface the generated data names as the schema's source.
    const { domainSchemaSource } = JSON.parse(committed());
    expect(domainSchemaSource, "qvm-data.json names no schema of qvm apply's file").toBeDefined();
    const [surface, name] = domainSchemaSource.split(" ");
    const { schema } = await importTs(`export { ${name} as schema } from ${JSON.stringify(surface)};`);
    const result = schema.safeParse(expectedDomains());
    expect(result.success, JSON.stringify(result.error?.issues)).toBe(true);
  });

  it("is valid against the JSON Schema the module's option types are made from", () => {
    const { domainSchema } = JSON.parse(committed());
    expect(domainSchema).not.toBeNull();
    const validate = new Ajv2020({ allErrors: true, strict: false }).compile(domainSchema);
    expect(validate(expectedDomains()), JSON.stringify(validate.errors)).toBe(true);
  });
});
