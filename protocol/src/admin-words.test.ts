import { describe, expect, it } from "vitest";
import {
  domainClassFromWord,
  domainClassWord,
  eventTypeFromWord,
  eventTypeWord,
  policyActionFromWord,
  policyActionWord,
  powerStateFromWord,
  powerStateWord,
} from "./admin-words.js";
import { DOMAIN_CLASSES, EVENT_TYPES, POLICY_ACTIONS, POWER_STATES, UNKNOWN_WORD } from "./contracts/index.js";
import { DomainClass, EventType, PolicyAction, PowerState } from "./gen/qvm/admin/v1/admin.js";

/** The values a proto enum defines, without UNSPECIFIED (0) and ts-proto's UNRECOGNIZED (-1). */
const knownValues = (e: Record<string, string | number>) => Object.values(e).filter((v): v is number => typeof v === "number" && v > 0);

// Each table as plain number <-> string functions, so one set of tests runs over all four.
interface Table {
  name: string;
  values: number[];
  words: readonly string[];
  word: (v: number) => string;
  fromWord: (w: string) => number;
}
const tables: Table[] = [
  { name: "DomainClass", values: knownValues(DomainClass), words: DOMAIN_CLASSES, word: (v: number) => domainClassWord(v), fromWord: domainClassFromWord },
  { name: "PowerState", values: knownValues(PowerState), words: POWER_STATES, word: (v: number) => powerStateWord(v), fromWord: powerStateFromWord },
  { name: "PolicyAction", values: knownValues(PolicyAction), words: POLICY_ACTIONS, word: (v: number) => policyActionWord(v), fromWord: policyActionFromWord },
  { name: "EventType", values: knownValues(EventType), words: EVENT_TYPES, word: (v: number) => eventTypeWord(v), fromWord: eventTypeFromWord },
];

describe.each(tables)("the $name words", ({ values, words, word, fromWord }) => {
  it("has one word for every value of the proto enum, and a value for every word", () => {
    expect(values.map(word).sort()).toEqual([...words].sort());
    expect(new Set(words.map(fromWord)).size).toBe(words.length);
  });

  it("round-trips", () => {
    for (const w of words) expect(word(fromWord(w))).toBe(w);
  });

  it("says unknown for UNSPECIFIED and for values it does not know, and UNSPECIFIED for a word it does not know", () => {
    expect(word(0)).toBe(UNKNOWN_WORD);
    expect(word(-1)).toBe(UNKNOWN_WORD);
    expect(word(999)).toBe(UNKNOWN_WORD);
    expect(fromWord("no-such-word")).toBe(0);
  });
});

it("keeps Qubes' spelling: AppVM and Running, not enum names", () => {
  expect(domainClassWord(DomainClass.DOMAIN_CLASS_APP_VM)).toBe("AppVM");
  expect(powerStateWord(PowerState.POWER_STATE_RUNNING)).toBe("Running");
  expect(policyActionWord(PolicyAction.POLICY_ACTION_ASK)).toBe("ask");
  expect(eventTypeWord(EventType.EVENT_TYPE_DOMAIN_PRE_SHUTDOWN)).toBe("domain-pre-shutdown");
});
