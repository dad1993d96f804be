import { mkdtempSync, rmSync, writeFileSync, existsSync, readdirSync, mkdirSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImageStore } from "./store.js";

let dir: string;
beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "qvm-store-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const manifest = (hash: string) => ({
  kind: "kernel", hash, kernelRelease: "6.1.0-1-amd64", packageVersion: "1", builtAt: "now",
  files: { vmlinuz: "vmlinuz", initrd: "initrd.img", modules: "modules.img" },
});

describe("image store", () => {
  it("names the build command when no kernel bundle exists", () => {
    const store = new ImageStore(dir);
    expect(() => store.kernel()).toThrow(expect.objectContaining({ code: "NOT_FOUND", message: expect.stringContaining("qvm-images build kernel") }));
    expect(() => store.template("debian-12")).toThrow(expect.objectContaining({ message: expect.stringContaining("qvm-images build template debian-12") }));
  });

  it("publishes an entry whole and marks it current", async () => {
    const store = new ImageStore(dir);
    await store.publish("kernels", "abc", async (out) => {
      writeFileSync(path.join(out, "vmlinuz"), "k");
      return manifest("abc");
    });
    expect(store.has("kernels", "abc")).toBe(true);
    expect(store.kernel().manifest.hash).toBe("abc");
  });

  it("leaves nothing behind when a build fails, and keeps the previous current entry", async () => {
    const store = new ImageStore(dir);
    await store.publish("kernels", "good", async () => manifest("good"));
    await expect(store.publish("kernels", "bad", async () => {
      throw new Error("mmdebstrap exploded");
    })).rejects.toThrow("exploded");
    expect(readdirSync(path.join(dir, "kernels")).sort()).toEqual(["current", "good"]);
    expect(store.kernel().manifest.hash).toBe("good");
  });

  it("removes partial directories of crashed builds", async () => {
    const store = new ImageStore(dir);
    mkdirSync(path.join(dir, "kernels", "x.partial-999"), { recursive: true });
    await store.publish("kernels", "y", async () => manifest("y"));
    expect(existsSync(path.join(dir, "kernels", "x.partial-999"))).toBe(false);
  });

  it("reports a corrupt manifest instead of using it", () => {
    mkdirSync(path.join(dir, "kernels", "h"), { recursive: true });
    writeFileSync(path.join(dir, "kernels", "h", "manifest.json"), "{ half");
    symlinkSync("h", path.join(dir, "kernels", "current"));
    expect(() => new ImageStore(dir).kernel()).toThrow(expect.objectContaining({ code: "CORRUPT_STATE" }));
  });
});

describe("template manifest: init", () => {
  const base = { kind: "template", name: "nixos", hash: "h", suite: "nixos", builtAt: "", sizeBytes: 1, files: { root: "root.img" } };
  it("takes an absolute path for the initramfs to hand over to", async () => {
    const { templateManifestSchema } = await import("./store.js");
    expect(templateManifestSchema.parse({ ...base, init: "/nix/var/nix/profiles/system/init" }).init).toBe("/nix/var/nix/profiles/system/init");
    expect(templateManifestSchema.parse(base).init).toBeUndefined();
  });
  it.each(["init", "/sbin/init quiet", "/x;reboot", "/a/../b", `/${"a".repeat(300)}`, "/a//b"])("refuses %j, which would not stay one kernel argument or leave the root", async (init) => {
    const { templateManifestSchema } = await import("./store.js");
    expect(templateManifestSchema.safeParse({ ...base, init }).success).toBe(false);
  });
});
