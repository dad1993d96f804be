// Contract test: the VmConfig the cloud-hypervisor driver sends is valid for CH's own OpenAPI
// description (../shared/vendor/cloud-hypervisor/cloud-hypervisor.yaml, reference data kept beside
// the clone; the test says what it skipped when it is absent). The schemas allow any extra
// property, so they are made strict here: a field CH does not know fails instead of being ignored.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { VmSpec } from "../driver.js";
import { buildVmConfig } from "./vm-config.js";

const API = path.resolve(__dirname, "../../../../../shared/vendor/cloud-hypervisor/cloud-hypervisor.yaml");
const present = existsSync(API);
if (!present) console.warn(`vm-config.test.ts: ${API} is missing, so the contract tests against cloud-hypervisor's API are skipped`);

/** Every object schema with properties gets additionalProperties: false (unless it says otherwise). */
function strict(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strict);
  if (!node || typeof node !== "object") return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = strict(v);
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

function validator(schema: string) {
  const doc = parse(readFileSync(API, "utf8")) as { components: { schemas: Record<string, unknown> } };
  // OpenAPI 3.0 keywords (nullable, example…) and formats (int64…) are not JSON Schema's.
  const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
  ajv.addSchema({ $id: "ch", components: strict(doc.components) }, "ch");
  return ajv.compile({ $ref: `ch#/components/schemas/${schema}` });
}

const spec: VmSpec = {
  name: "work",
  runtimeDir: "/run/qvm/domains/work",
  logDir: "/var/lib/qvm/logs/work",
  kernel: { image: "/var/lib/qvm/images/kernels/k/vmlinux", initrd: "/var/lib/qvm/images/kernels/k/initrd.img" },
  kernelArgs: ["systemd.hostname=work"],
  disks: [
    { serial: "root", path: "/var/lib/qvm/volatile/work/root.qcow2", format: "qcow2", readonly: false },
    { serial: "private", path: "/var/lib/qvm/volumes/work/private.qcow2", format: "qcow2", readonly: false },
    { serial: "modules", path: "/var/lib/qvm/images/kernels/k/modules.img", format: "raw", readonly: true },
  ],
  memoryMiB: 400,
  vcpus: 2,
  guestCid: 3,
};
const paths = { vsockSocket: "/run/qvm/domains/work/vsock.sock", consoleSocket: "/run/qvm/domains/work/console.sock" };

describe.skipIf(!present)("cloud-hypervisor VmConfig against CH's OpenAPI description", () => {
  it("is valid, every field one CH knows", () => {
    const validate = validator("VmConfig");
    const body = buildVmConfig(spec, paths);
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
  });

  it("the strict check catches a field CH does not know and a wrong enum", () => {
    const validate = validator("VmConfig");
    const body = buildVmConfig(spec, paths) as unknown as Record<string, unknown>;
    expect(validate({ ...body, cpus: { boot_vcpus: 2, max_vcpus: 2, turbo: true } })).toBe(false);
    expect(validate({ ...body, serial: { mode: "Telnet" } })).toBe(false);
  });
});

describe("cloud-hypervisor VmConfig", () => {
  it("boots the PVH image with the domain's command line, memory in bytes, disks by serial", () => {
    const body = buildVmConfig(spec, paths);
    expect(body.payload).toEqual({ kernel: spec.kernel.image, initramfs: spec.kernel.initrd, cmdline: expect.stringContaining("systemd.hostname=work") });
    expect(body.memory).toEqual({ size: 400 * 1024 * 1024, shared: true });
    expect(body.disks.map((d) => [d.serial, d.image_type, d.readonly])).toEqual([["root", "Qcow2", false], ["private", "Qcow2", false], ["modules", "Raw", true]]);
    expect(body.vsock).toEqual({ cid: 3, socket: paths.vsockSocket });
    expect(body.balloon).toMatchObject({ free_page_reporting: true });
  });

  it("refuses what it cannot express yet, naming the way out", () => {
    expect(() => buildVmConfig({ ...spec, nics: [{ id: "eth0", mac: "00:16:3e:00:00:01", backend: { kind: "stream-unix", path: "/x" } }] }, paths)).toThrow(/netvm|QEMU backend/);
  });
});
