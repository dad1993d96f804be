// Validation of entry names and symlink targets (which characters are refused: text.ts). Shared
// by the receiver (which must enforce it) and the sender (which checks early so a user gets a
// clear error instead of a refused copy).
import { FilecopyError, quoteName } from "./errors.js";
import { unsafeCharacter } from "./text.js";
import { MAX_COMPONENT_BYTES, MAX_COMPONENTS, MAX_LINK_TARGET_BYTES, MAX_NAME_BYTES } from "./format.js";

// fatal: invalid UTF-8 is refused rather than silently replaced (the name on disk must be the
// name that was checked); ignoreBOM: a leading U+FEFF is decoded as a character (and refused
// below, as a format character), never dropped silently.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Checks a raw entry name and returns it decoded; throws BAD_NAME. */
export function validateName(bytes: Uint8Array): string {
  const bad = (why: string): never => {
    throw new FilecopyError("BAD_NAME", `bad entry name ${quoteName(bytes)}: ${why}`);
  };
  if (bytes.length < 1 || bytes.length > MAX_NAME_BYTES) bad(`length ${bytes.length} not in 1..${MAX_NAME_BYTES} bytes`);
  if (bytes.includes(0)) bad("contains NUL");
  const name = decodeUtf8(bytes) ?? bad("not valid UTF-8");
  const unsafe = unsafeCharacter(name);
  if (unsafe) bad(`contains ${unsafe} (a control, format, separator or unassigned character)`);
  const parts = name.split("/");
  if (parts.length > MAX_COMPONENTS) bad(`more than ${MAX_COMPONENTS} components`);
  for (const p of parts) {
    // Empty covers a leading "/", "//" and a trailing "/".
    if (p === "" || p === "." || p === "..") bad(`component ${JSON.stringify(p)} not allowed`);
    if (Buffer.byteLength(p, "utf8") > MAX_COMPONENT_BYTES) bad(`component longer than ${MAX_COMPONENT_BYTES} bytes`);
  }
  return name;
}

/**
 * Checks a symlink target for the (already validated) link `name`; throws BAD_SYMLINK or
 * SYMLINK_ESCAPE. The target must resolve inside the link's top-level entry.
 *
 * A purely lexical check is not enough: in "l/../x" the kernel applies ".." to wherever the
 * symlink "l" points, not to the link's directory. So ".." is only allowed as a leading run,
 * where it applies to the link's own directory, which is a real directory this stream created
 * (parents must be sent as directories). Every later component descends, and any symlink it
 * crosses was itself checked by this rule, so by induction the whole chain stays inside.
 */
export function validateLinkTarget(name: string, target: Uint8Array): string {
  const where = `symlink ${quoteName(name)} → ${quoteName(target)}`;
  if (target.length < 1 || target.length > MAX_LINK_TARGET_BYTES)
    throw new FilecopyError("BAD_SYMLINK", `${where}: target length ${target.length} not in 1..${MAX_LINK_TARGET_BYTES}`);
  if (target.includes(0)) throw new FilecopyError("BAD_SYMLINK", `${where}: target contains NUL`);
  const text = decodeUtf8(target);
  if (text === undefined) throw new FilecopyError("BAD_SYMLINK", `${where}: target is not valid UTF-8`);
  const unsafe = unsafeCharacter(text);
  if (unsafe) throw new FilecopyError("BAD_SYMLINK", `${where}: target contains ${unsafe} (a control, format, separator or unassigned character)`);
  const escape = (why: string): never => {
    throw new FilecopyError("SYMLINK_ESCAPE", `${where}: ${why}`);
  };
  if (text.startsWith("/")) escape("absolute target");

  const nameParts = name.split("/");
  const dir = nameParts.slice(0, -1);
  // "a//b" and "./a" mean the same as "a/b" and "a" to the kernel.
  const parts = text.split("/").filter((p) => p !== "" && p !== ".");
  let ups = 0;
  while (parts[ups] === "..") ups++;
  const rest = parts.slice(ups);
  if (rest.includes("..")) escape('".." after a normal component (it would apply to wherever that component points)');
  if (ups > dir.length) escape("target leaves the destination folder");
  const resolved = [...dir.slice(0, dir.length - ups), ...rest];
  if (resolved[0] !== nameParts[0]) escape(`target resolves outside the top-level entry ${quoteName(nameParts[0] ?? "")}`);
  return text;
}
