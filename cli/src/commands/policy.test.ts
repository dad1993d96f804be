// The `qvm policy ask` prompt's rules (audit 2026-11-30, finding 10), with a fake clock: Enter
// alone denies, questions expire here before qvmd denies them, a late answer is reported and not
// sent (nor given to the next question), and questions are served round-robin by domain.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { adminV1 } from "@qvm/protocol";
import { AskSession, localTimeoutMs } from "./policy.js";

let nextId = 1;
const question = (source: string, more: Partial<adminV1.AskQuestion> = {}): adminV1.AskQuestion => ({
  id: nextId++,
  source,
  service: "qubes.Filecopy",
  argument: "",
  requestedTarget: "@default",
  targets: ["personal", "vault"],
  defaultTarget: "",
  timeoutSeconds: 60,
  ...more,
});

let answers: Array<[number, string]>;
let said: string;
let s: AskSession;

beforeEach(() => {
  vi.useFakeTimers();
  answers = [];
  said = "";
  s = new AskSession({ answer: (id, target) => answers.push([id, target]), say: (t) => (said += t) });
});
afterEach(() => {
  s.close();
  vi.useRealTimers();
});

/** The source of the question on screen (the last one shown). */
const shown = () => [...said.matchAll(/\n(\S+) asks to call/g)].map((m) => m[1]);

describe("qvm policy ask", () => {
  // [what is typed, the answer sent ("" denies), what is said]
  it.each([
    ["", "", /-> denied \(Enter alone denies\)/],
    ["   ", "", /-> denied \(Enter alone denies\)/],
    ["deny", "", /-> denied\n/],
    ["vault", "vault", /-> vault\n/],
    [" personal ", "personal", /-> personal\n/],
  ])("typing %j answers %j", (line, target, msg) => {
    const q = question("work", { defaultTarget: "vault" });
    s.question(q);
    s.line(line);
    expect(answers).toEqual([[q.id, target]]);
    expect(said).toMatch(msg);
  });

  it("Enter alone denies even when the policy has a default_target; it is shown as a suggestion only", () => {
    const q = question("work", { requestedTarget: "vault", defaultTarget: "vault" });
    s.question(q);
    expect(said).toContain("The policy suggests vault; type it to choose it.");
    expect(said).toContain('Target (or "deny"; Enter alone denies; 60 s): ');
    expect(said).not.toContain("[vault]");
    s.line("");
    expect(answers).toEqual([[q.id, ""]]);
  });

  it("a double Enter denies the next question too, never approves it", () => {
    const [a, b] = [question("work", { defaultTarget: "vault" }), question("work", { defaultTarget: "vault" })];
    s.question(a);
    s.question(b);
    s.line("");
    s.line("");
    expect(answers).toEqual([
      [a.id, ""],
      [b.id, ""],
    ]);
  });

  it("a target not offered is refused and the question stays", () => {
    const q = question("work");
    s.question(q);
    s.line("work");
    expect(answers).toEqual([]);
    expect(said).toContain('"work" is not one of: personal, vault');
    s.line("vault");
    expect(answers).toEqual([[q.id, "vault"]]);
  });

  it("the question on screen expires a little before qvmd's timeout; an answer after that says so and is not sent, nor given to the next question", () => {
    const a = question("work", { timeoutSeconds: 60 });
    s.question(a);
    vi.advanceTimersByTime(58_999);
    expect(said).not.toContain("expired");
    vi.advanceTimersByTime(1);
    expect(said).toContain("The question from work expired after 60 s: its call was denied. Press Enter to go on.");
    const b = question("personal", { targets: ["vault"] });
    s.question(b);
    expect(shown()).toEqual(["work"]); // b waits until the late line has been read
    s.line("vault");
    expect(answers).toEqual([]);
    expect(said).toContain("Not sent: the question from work (qubes.Filecopy) had expired, and its call was denied.");
    expect(shown()).toEqual(["work", "personal"]);
    s.line("vault");
    expect(answers).toEqual([[b.id, "vault"]]);
  });

  it("Enter after an expired question just goes on", () => {
    s.question(question("work", { timeoutSeconds: 10 }));
    const b = question("personal");
    s.question(b);
    vi.advanceTimersByTime(10_000);
    s.line("");
    expect(said).not.toContain("Not sent");
    expect(shown()).toEqual(["work", "personal"]);
    expect(answers).toEqual([]);
  });

  it("questions that expire while waiting are dropped, and counted when the next is shown", () => {
    const a = question("work", { timeoutSeconds: 60 });
    s.question(a);
    vi.advanceTimersByTime(30_000);
    s.question(question("personal", { timeoutSeconds: 10 }));
    s.question(question("vault", { timeoutSeconds: 10 }));
    const late = question("personal", { timeoutSeconds: 60 });
    s.question(late);
    vi.advanceTimersByTime(10_000);
    expect(s.pending).toBe(2);
    s.line("deny");
    expect(said).toContain("(2 questions expired while waiting: denied.)");
    expect(shown()).toEqual(["work", "personal"]);
    s.line("vault");
    expect(answers).toEqual([
      [a.id, ""],
      [late.id, "vault"],
    ]);
  });

  it("serves questions round-robin by calling domain: a flood from one domain does not keep another's waiting", () => {
    for (let i = 0; i < 5; i++) s.question(question("flooder"));
    s.question(question("work"));
    s.question(question("personal"));
    s.question(question("work"));
    for (let i = 0; i < 8; i++) s.line("deny");
    expect(shown()).toEqual(["flooder", "work", "personal", "flooder", "work", "flooder", "flooder", "flooder"]);
  });

  it("a line with no question waiting is ignored", () => {
    s.line("vault");
    expect(answers).toEqual([]);
    s.question(question("work"));
    expect(shown()).toEqual(["work"]);
  });

  it("after close, nothing is shown or sent and no timer is left", () => {
    s.question(question("work"));
    s.question(question("work"));
    s.close();
    s.line("vault");
    s.question(question("personal"));
    expect(answers).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it.each([
    [60, 59_000],
    [6, 5_000],
    [2, 1_500],
    [1, 750],
    [0, undefined],
  ])("a question of %d s expires here after %s ms", (seconds, ms) => {
    expect(localTimeoutMs(seconds)).toBe(ms);
  });
});
