// Reads a declared-domains file (YAML, or JSON, which is YAML too) and checks it against the one
// schema (@qvm/protocol/declared: declaredFileSchema), keeping where each value came from, so
// that every problem is reported at once as `FILE:LINE:COL: PATH: what is wrong`.
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document } from "yaml";
import { QvmError } from "@qvm/protocol/contracts";
import { declaredFileSchema, type DeclaredFile } from "@qvm/protocol/declared";

/** A file larger than this is refused before it is parsed (a DoS bound: a real one is a few kB). */
export const MAX_DECLARED_FILE_BYTES = 16 * 1024 * 1024;
/** At most this many problems are listed; the count of the rest follows. */
export const MAX_REPORTED_PROBLEMS = 50;
/** YAML aliases the file may expand (yaml's default; a guard against "billion laughs"). */
const MAX_ALIAS_COUNT = 100;

type Issue = NonNullable<ReturnType<typeof declaredFileSchema.safeParse>["error"]>["issues"][number];
type Segment = PropertyKey;

/**
 * The declared file in `text`, checked. Throws QvmError INVALID_ARGUMENT whose message holds one
 * line per problem, `NAME:LINE:COL: PATH: message` (NAME as given: the path the user typed).
 */
export function parseDeclaredFile(text: string, name: string): DeclaredFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return `${name}`;
    const { line, col } = lineCounter.linePos(offset);
    return `${name}:${line}:${col}`;
  };
  if (doc.errors.length) throw invalid(doc.errors.map((e) => `${at(e.pos[0])}: ${firstLine(e.message)}`));
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw invalid([`${name}: ${(err as Error).message}`]);
  }
  const result = declaredFileSchema.safeParse(data);
  if (result.success) return result.data;
  const problems = result.error.issues.flatMap((issue) => describeIssue(issue, data)).map((p) => `${at(offsetOf(doc, p.path, p.at))}: ${formatPath(p.path)}: ${p.message}`);
  throw invalid(problems);
}

function invalid(problems: string[]): QvmError {
  const shown = problems.slice(0, MAX_REPORTED_PROBLEMS);
  if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more problems`);
  return new QvmError("INVALID_ARGUMENT", shown.join("\n"));
}

function firstLine(message: string): string {
  return message.split("\n")[0]!.trim();
}

/** One problem: where (the value, or the key that names it) and what. */
interface Problem {
  path: Segment[];
  at: "key" | "value";
  message: string;
}

/** A zod issue as problems the user can act on (an unknown-fields issue names each field). */
function describeIssue(issue: Issue, data: unknown): Problem[] {
  const path = issue.path as Segment[];
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((key) => ({ path: [...path, key], at: "key", message: `unknown field${knownFields(path)}` }));
    case "invalid_key": {
      const inner = issue.issues[0]?.message;
      return [{ path, at: "key", message: inner ?? "not a valid name here" }];
    }
    case "invalid_type":
    case "invalid_value":
    case "invalid_union": {
      if (valueAt(data, path) !== undefined) return [{ path, at: "value", message: typeMessage(issue) }];
      return [{ path, at: "key", message: `is required${issue.message.startsWith("Invalid input") ? "" : ` (${issue.message})`}` }];
    }
    default:
      return [{ path, at: "value", message: issue.message }];
  }
}

function typeMessage(issue: Issue): string {
  if (!issue.message.startsWith("Invalid input")) return issue.message;
  // zod's own words, for the types the schema has no message of its own for (maps and lists).
  if (issue.code === "invalid_type") {
    const expected = issue.expected === "object" ? "a map (NAME: VALUE lines)" : issue.expected === "array" ? "a list" : `a ${issue.expected}`;
    return `must be ${expected}`;
  }
  return issue.message;
}

/** ", fields: a, b, c" for the map at `path` (the declared domain or its properties), or "". */
function knownFields(path: Segment[]): string {
  const fields = fieldsAt(path);
  return fields ? ` (the fields here: ${fields.join(", ")})` : "";
}

function fieldsAt(path: Segment[]): string[] | undefined {
  let schema: unknown = declaredFileSchema;
  for (const seg of path) {
    schema = unwrap(schema);
    const def = (schema as { def?: { type?: string; shape?: Record<string, unknown>; valueType?: unknown; element?: unknown } }).def;
    if (def?.type === "object") schema = def.shape?.[String(seg)];
    else if (def?.type === "record") schema = def.valueType;
    else if (def?.type === "array") schema = def.element;
    else return undefined;
  }
  const def = (unwrap(schema) as { def?: { type?: string; shape?: Record<string, unknown> } }).def;
  return def?.type === "object" && def.shape ? Object.keys(def.shape) : undefined;
}

/** The schema inside .optional() and .superRefine() wrappers. */
function unwrap(schema: unknown): unknown {
  let s = schema as { def?: { type?: string; innerType?: unknown } } | undefined;
  while (s?.def?.type === "optional" && s.def.innerType) s = s.def.innerType as typeof s;
  return s;
}

function valueAt(data: unknown, path: Segment[]): unknown {
  let v = data;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/**
 * Where `path` is in the document: the value's first character, or its key's. A path that is not
 * there (a missing field) points at the key of the nearest map that is: the domain it is missing from.
 */
function offsetOf(doc: Document, path: Segment[], at: "key" | "value"): number | undefined {
  let node: unknown = doc.contents;
  let keyNode: { range?: [number, number, number] | null } | undefined;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return rangeStart(keyNode) ?? rangeStart(node);
      keyNode = pair.key as typeof keyNode;
      // A key with no value (`label:`) has no value node: point at the key.
      node = pair.value ?? pair.key;
    } else if (isSeq(node) && typeof seg === "number" && node.items[seg]) {
      keyNode = undefined;
      node = node.items[seg];
    } else {
      return rangeStart(keyNode) ?? rangeStart(node);
    }
  }
  return at === "key" ? (rangeStart(keyNode) ?? rangeStart(node)) : (rangeStart(node) ?? rangeStart(keyNode));
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] | null } | undefined)?.range;
  return range ? range[0] : undefined;
}

/** `domains.work.memory`, `domains.work.features["service.cups"]`, `domains.work.firewall[2]`; "the file" at the top. */
export function formatPath(path: readonly Segment[]): string {
  if (path.length === 0) return "the file";
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(String(seg))) out += `${out ? "." : ""}${String(seg)}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}
