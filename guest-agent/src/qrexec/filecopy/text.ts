// Which characters of a (hostile) name are unsafe to show or store, and how to quote them.

/**
 * Characters no name or link target may hold, whoever shows it later (`ls`, a file manager, a
 * terminal): they can rewrite the screen or hide what a name really says. Like Qubes'
 * qubes_pure_validate_file_name by default:
 *   - Cc: C0 controls (newline, ESC, ...), DEL, C1 controls (U+0080–U+009F, e.g. U+009B CSI);
 *   - Cf: format characters: bidi controls (U+202A–U+202E, U+2066–U+2069, U+200E/F, U+061C),
 *     zero-width ones (U+200B–U+200D, U+2060, U+FEFF), soft hyphen, tag characters;
 *   - Zl, Zp: the line and paragraph separators U+2028, U+2029;
 *   - Zs other than U+0020: spaces that do not look like one or are invisible (U+00A0, U+3000);
 *   - Co, Cn, Cs: private use, unassigned (as Node's Unicode data knows it) and surrogates.
 * Qubes goes further (an allowlist: no right-to-left scripts, combining marks or symbols such as
 * emoji); qvm accepts those, which cannot reorder or hide the text around them by themselves.
 */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}\p{Cs}]|(?! )\p{Zs}/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "gu");

/** The first unsafe character of `text`, as U+XXXX, or undefined. */
export function unsafeCharacter(text: string): string | undefined {
  const m = UNSAFE.exec(text);
  return m ? `U+${m[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}` : undefined;
}

/** JSON-quotes `text` and escapes every unsafe character in it as \uXXXX (JSON leaves C1 and bidi raw). */
export function quoteText(text: string): string {
  // One code point may be two UTF-16 units (a tag character): each is escaped, as JSON would.
  return JSON.stringify(text).replace(UNSAFE_ALL, (c) => Array.from({ length: c.length }, (_, i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`).join(""));
}
