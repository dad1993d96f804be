// Text a domain chose, on its way into a log line, an event or an error message a person reads.
// It is JSON-quoted (or, inside qvmd's own sentences, escaped) with every character a terminal or
// a log viewer could act on written as \uXXXX: C0 and C1 controls, DEL, line and paragraph
// separators, format characters (bidi overrides and isolates, zero-width characters), lone
// surrogates, private-use and unassigned code points. JSON.stringify alone leaves C1 (U+0080-009F,
// e.g. CSI) and the bidi controls through. One rule for every component that shows guest text.

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]/gu;

function escapeUnits(ch: string): string {
  let out = "";
  for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

/** `s` as a JSON string literal with nothing a terminal would act on, clipped to `max` code points. */
export function quoteGuestText(s: string, max = 200): string {
  const points = [...s];
  const clipped = points.length > max ? `${points.slice(0, max).join("")}…` : s;
  return JSON.stringify(clipped).replace(UNSAFE, escapeUnits);
}

/** Text qvmd wrote that may carry a guest's words: left unquoted, every unsafe character escaped. */
export function escapeGuestText(s: string): string {
  return s.replace(UNSAFE, escapeUnits);
}
