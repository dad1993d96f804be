import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, unlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DomainRecord } from "../model/domain.js";
import { DomainStore, STORE_FILE } from "./domain-store.js";

let dir: string;
beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "qvm-store-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const rec = (name: string): DomainRecord => ({ name, class: "AppVM", props: { label: "red" }, features: {}, tags: [], createdAt: "t" });
const file = () => path.join(dir, STORE_FILE);

describe("domain store", () => {
  it("persists every change and loads it back", () => {
    const s = DomainStore.open(dir);
    s.create(rec("work"));
    s.update("work", (r) => (r.props.memory = 800));
    s.setGlobal("default_netvm", "sys-net");
    const again = DomainStore.open(dir);
    expect(again.get("work")?.props.memory).toBe(800);
    expect(again.globals()).toEqual({ default_netvm: "sys-net" });
  });

  it("keeps the previous generation", () => {
    const s = DomainStore.open(dir);
    s.create(rec("a"));
    s.create(rec("b"));
    const prev = JSON.parse(readFileSync(`${file()}.prev`, "utf8"));
    expect(Object.keys(prev.body.domains)).toEqual(["a"]);
  });

  it("reports a half-written file instead of replacing it", () => {
    DomainStore.open(dir).create(rec("work"));
    const text = readFileSync(file(), "utf8");
    writeFileSync(file(), text.slice(0, text.length / 2));
    expect(() => DomainStore.open(dir)).toThrow(expect.objectContaining({ code: "CORRUPT_STATE", message: expect.stringContaining(".prev") }));
    expect(readFileSync(file(), "utf8")).toBe(text.slice(0, text.length / 2)); // untouched
  });

  it("detects a changed byte through the checksum", () => {
    DomainStore.open(dir).create(rec("work"));
    writeFileSync(file(), readFileSync(file(), "utf8").replace('"red"', '"blue"'));
    expect(() => DomainStore.open(dir)).toThrow(/checksum/);
  });

  it("refuses a record whose key and name disagree", () => {
    const s = DomainStore.open(dir);
    s.create(rec("work"));
    const doc = JSON.parse(readFileSync(file(), "utf8"));
    doc.body.domains.work.name = "other";
    doc.checksum = createHash("sha256").update(JSON.stringify(doc.body)).digest("hex");
    writeFileSync(file(), JSON.stringify(doc));
    expect(() => DomainStore.open(dir)).toThrow(/names itself/);
  });

  it("does not start empty when the store vanished but its previous generation exists", () => {
    const s = DomainStore.open(dir);
    s.create(rec("a"));
    s.create(rec("b"));
    unlinkSync(file());
    expect(() => DomainStore.open(dir)).toThrow(/restore it/);
    expect(existsSync(`${file()}.prev`)).toBe(true);
  });

  it("refuses duplicates and unknown names with typed errors", () => {
    const s = DomainStore.open(dir);
    s.create(rec("work"));
    expect(() => s.create(rec("work"))).toThrow(expect.objectContaining({ code: "ALREADY_EXISTS" }));
    expect(() => s.remove("nope")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
  });

  it("leaves memory unchanged when a change fails validation", () => {
    const s = DomainStore.open(dir);
    s.create(rec("work"));
    expect(() => s.update("work", (r) => ((r as { class: string }).class = "Bogus"))).toThrow();
    expect(s.get("work")?.class).toBe("AppVM");
    expect(DomainStore.open(dir).get("work")?.class).toBe("AppVM");
  });
});

describe("domain store: stale temp files of interrupted writes", () => {
  it.each([
    [".qvm.json.tmp-999999999", true, "a write that crashed (no such process)"],
    ["qvm.json.prev.tmp-999999999", true, "a .prev link that crashed"],
    [`.qvm.json.tmp-${process.pid}`, true, "this process's own"],
    [".qvm.json.tmp-1", false, "a live process's (pid 1): a write may be under way"],
    [".qvm.json.tmp-abc", false, "not a temp name of ours"],
    ["qvm.json.bak", false, "someone else's file"],
    [".other.json.tmp-999999999", false, "another file's temp"],
  ])("%s is removed at open: %s (%s)", (name, removed) => {
    DomainStore.open(dir).create(rec("work"));
    writeFileSync(path.join(dir, name), "{half");
    const s = DomainStore.open(dir);
    expect(existsSync(path.join(dir, name))).toBe(!removed);
    // The store itself is untouched.
    expect(s.get("work")?.name).toBe("work");
    expect(existsSync(file())).toBe(true);
  });

  it("removes them even when the store file is missing, before deciding anything", () => {
    writeFileSync(path.join(dir, ".qvm.json.tmp-999999999"), "{half");
    expect(DomainStore.removeStaleTempFiles(dir)).toEqual([".qvm.json.tmp-999999999"]);
    DomainStore.open(dir);
    expect(readdirSync(dir).filter((n) => n.includes("tmp"))).toEqual([]);
  });
});
