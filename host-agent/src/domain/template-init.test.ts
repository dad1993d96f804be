// A template image whose root hands over to its own init (a NixOS root): registered as a TemplateVM
// with kernelopts `qvm.init=PATH`, which its AppVMs inherit (the initramfs reads qvm.init).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { EventBus } from "../base/events.js";
import { DomainStore } from "../store/domain-store.js";
import { DomainRegistry } from "./registry.js";

let dir: string;
let registry: DomainRegistry;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-tmplinit-"));
  registry = new DomainRegistry(DomainStore.open(dir), new EventBus(), () => false);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

it("passes the image's init to the template and its AppVMs as qvm.init", () => {
  registry.add(registry.templateImageRecord("nixos", "/nix/var/nix/profiles/system/init")!);
  registry.add(registry.templateImageRecord("debian-12")!);
  registry.add({ name: "work", class: "AppVM", props: { label: "red", template: "nixos" }, features: {}, tags: [], createdAt: "" });
  expect(registry.resolve(registry.get("nixos"), "kernelopts")).toBe("qvm.init=/nix/var/nix/profiles/system/init");
  expect(registry.resolve(registry.get("work"), "kernelopts")).toBe("qvm.init=/nix/var/nix/profiles/system/init");
  expect(registry.resolve(registry.get("debian-12"), "kernelopts")).toBe("");
});
