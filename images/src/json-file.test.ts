// writeFileAtomic's order of durability steps (data fsync, rename, directory fsync), checked on the
// real node:fs calls it makes, and its cleanup when a step fails.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

vi.mock("node:fs", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs")>();
  const spied = { ...real, openSync: vi.fn(real.openSync), fsyncSync: vi.fn(real.fsyncSync), renameSync: vi.fn(real.renameSync), writeSync: vi.fn(real.writeSync) };
  return { ...spied, default: spied };
});

const { writeFileAtomic, writeJsonAtomic, fsyncDir } = await import("./json-file.js");
const mocked = fs as unknown as Record<"openSync" | "fsyncSync" | "renameSync" | "writeSync", ReturnType<typeof vi.fn>>;

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "qvm-json-file-"));
  vi.clearAllMocks();
});
afterEach(() => {
  vi.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The call order of a mock's n-th call (vitest numbers all mock calls in one sequence). */
const order = (m: ReturnType<typeof vi.fn>, n: number) => m.mock.invocationCallOrder[n]!;

describe("writeFileAtomic", () => {
  it("fsyncs the data before the rename and the directory after it", () => {
    const file = path.join(dir, "qvm.json");
    writeFileAtomic(file, "hello\n");
    expect(fs.readFileSync(file, "utf8")).toBe("hello\n");
    // open(tmp) then open(dir): the second open is the directory's.
    expect(mocked.openSync.mock.calls.map((c) => c[0])).toEqual([path.join(dir, ".qvm.json.tmp-" + process.pid), dir]);
    const tmpFd = mocked.openSync.mock.results[0]!.value as number;
    const dirFd = mocked.openSync.mock.results[1]!.value as number;
    expect(mocked.fsyncSync.mock.calls.map((c) => c[0])).toEqual([tmpFd, dirFd]);
    expect(order(mocked.fsyncSync, 0)).toBeLessThan(order(mocked.renameSync, 0));
    expect(order(mocked.renameSync, 0)).toBeLessThan(order(mocked.fsyncSync, 1));
    expect(fs.readdirSync(dir)).toEqual(["qvm.json"]);
  });

  it("writeJsonAtomic goes the same way", () => {
    writeJsonAtomic(path.join(dir, "m.json"), { a: 1 });
    expect(JSON.parse(fs.readFileSync(path.join(dir, "m.json"), "utf8"))).toEqual({ a: 1 });
    expect(mocked.fsyncSync).toHaveBeenCalledTimes(2);
  });

  it.each([
    ["the write", "writeSync"],
    ["the data fsync", "fsyncSync"],
    ["the rename", "renameSync"],
  ] as const)("leaves the old file and no temp file when %s fails", (_what, step) => {
    const file = path.join(dir, "qvm.json");
    fs.writeFileSync(file, "old\n");
    mocked[step].mockImplementationOnce(() => {
      throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    });
    expect(() => writeFileAtomic(file, "new\n")).toThrow(/ENOSPC/);
    expect(fs.readFileSync(file, "utf8")).toBe("old\n");
    expect(fs.readdirSync(dir)).toEqual(["qvm.json"]);
  });
});

describe("fsyncDir", () => {
  it("tolerates a filesystem that cannot fsync a directory (EINVAL), and reports other errors", () => {
    mocked.fsyncSync.mockImplementationOnce(() => {
      throw Object.assign(new Error("EINVAL"), { code: "EINVAL" });
    });
    expect(() => fsyncDir(dir)).not.toThrow();
    mocked.fsyncSync.mockImplementationOnce(() => {
      throw Object.assign(new Error("EIO: i/o error"), { code: "EIO" });
    });
    expect(() => fsyncDir(dir)).toThrow(/EIO/);
    expect(() => fsyncDir(path.join(dir, "missing"))).toThrow(/ENOENT/);
  });
});
