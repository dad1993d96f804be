// Validators for cloud-hypervisor's OpenAPI schemas, for the contract tests. The description is
// reference data kept beside the clone (../shared/vendor/cloud-hypervisor/, present in CI): without
// it the contract tests fail and say where it should be. Its schemas allow any extra property, so
// they are made strict here: a field CH does not know fails instead of being ignored.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";

export const CH_API_DESCRIPTION = path.resolve(__dirname, "../../../../../shared/vendor/cloud-hypervisor/cloud-hypervisor.yaml");

/** Every object schema with properties gets additionalProperties: false (unless it says otherwise). */
function strict(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strict);
  if (!node || typeof node !== "object") return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = strict(v);
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

let ajv: Ajv | undefined;

/** A validator for components/schemas/NAME of CH's API description. */
export function chSchema(name: string): ValidateFunction {
  if (!ajv) {
    if (!existsSync(CH_API_DESCRIPTION)) throw new Error(`cloud-hypervisor's API description is missing at ${CH_API_DESCRIPTION}: the contract tests need ../shared beside the clone`);
    const doc = parse(readFileSync(CH_API_DESCRIPTION, "utf8")) as { components: unknown };
    // OpenAPI 3.0 keywords (nullable, example…) and formats (int64…) are not JSON Schema's.
    ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
    ajv.addSchema({ $id: "ch", components: strict(doc.components) }, "ch");
  }
  return ajv.compile({ $ref: `ch#/components/schemas/${name}` });
}
