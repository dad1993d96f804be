import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { logRotationAttacher, rotateIfLarge } from "./log-rotation.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));
const tmp = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), "qvm-logs-"));
  dirs.push(d);
  return d;
};

describe("domain log rotation", () => {
  it("keeps the newest bytes in .1 and lets an appending writer go on at the start", () => {
    const file = path.join(tmp(), "console.log");
    const fd = openSync(file, "a"); // as QEMU's logappend=on and qvmd's VMM output
    writeSync(fd, "old ".repeat(100) + "TAIL");
    expect(rotateIfLarge(file, 64)).toBe(true);
    expect(readFileSync(`${file}.1`, "utf8")).toBe(`${"old ".repeat(15)}TAIL`);
    expect(statSync(file).size).toBe(0);
    writeSync(fd, "after");
    closeSync(fd);
    expect(readFileSync(file, "utf8")).toBe("after");
    expect(rotateIfLarge(file, 64)).toBe(false);
  });

  it("a flooding writer is held near the cap while the attachment lives, and stops being checked when released", async () => {
    const dir = tmp();
    const file = path.join(dir, "console.log");
    const fd = openSync(file, "a");
    const attacher = logRotationAttacher(() => dir, 4096, 5);
    const held = await attacher.attach({ name: "flood", info: {} as never, reattached: false });
    let biggest = 0;
    for (let i = 0; i < 200; i++) {
      writeSync(fd, "x".repeat(1000));
      biggest = Math.max(biggest, statSync(file).size);
      await new Promise((r) => setTimeout(r, 1));
    }
    await held.dispose();
    closeSync(fd);
    expect(biggest).toBeLessThan(200 * 1000);
    expect(statSync(`${file}.1`).size).toBeLessThanOrEqual(4096);
  });
});
