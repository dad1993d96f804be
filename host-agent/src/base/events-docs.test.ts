// The event list is written twice: in code (EVENT_TYPES) and in docs/admin-api.md for people.
// This keeps the two the same list.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "@qvm/images";
import { EVENT_TYPES } from "./events.js";

describe("docs/admin-api.md", () => {
  it("lists every event type, and no other", () => {
    const doc = readFileSync(path.join(repoRoot(), "docs/admin-api.md"), "utf8");
    // The paragraph, without what is said in parentheses about each event (its fields and their
    // values, some of them in backquotes too); an event's name may be a single word ("clipboard").
    const start = doc.indexOf("**Events**");
    const paragraph = doc.slice(start, doc.indexOf("\n\n", start)).replace(/\([^()]*\)/g, "");
    const listed = [...paragraph.matchAll(/`([a-z]+(?:-[a-z]+)*)`/g)].map((m) => m[1]);
    expect([...listed].sort()).toEqual([...EVENT_TYPES].sort());
  });
});
