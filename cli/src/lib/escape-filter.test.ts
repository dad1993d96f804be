// The terminal escape filter of `qvm run` (audit finding 14): a table of what a hostile domain
// may print and what reaches the admin's terminal, whole and split at every byte.
import { describe, expect, it } from "vitest";
import { EscapeFilter, MAX_SEQUENCE, MAX_STRING, escapeFiltering, localeIsUtf8 } from "./escape-filter.js";

function run(input: string | Buffer, opts: { utf8?: boolean } = { utf8: true }): string {
  const f = new EscapeFilter(opts);
  const bytes = typeof input === "string" ? Buffer.from(input, "utf8") : input;
  return Buffer.concat([f.push(bytes), f.end()]).toString("utf8");
}

/** The same input fed one byte at a time: sequences and characters split across chunks. */
function runBytewise(input: string | Buffer, opts: { utf8?: boolean } = { utf8: true }): string {
  const f = new EscapeFilter(opts);
  const bytes = typeof input === "string" ? Buffer.from(input, "utf8") : input;
  const out: Buffer[] = [];
  for (const b of bytes) out.push(f.push(Buffer.from([b])));
  out.push(f.end());
  return Buffer.concat(out).toString("utf8");
}

const table: [string, string | Buffer, string][] = [
  // passed as they are
  ["plain text", "hello, world\n", "hello, world\n"],
  ["tab, CR, LF", "a\tb\r\nc\n", "a\tb\r\nc\n"],
  ["UTF-8 text", "héllo 日本 😀 e\u0301\n", "héllo 日本 😀 e\u0301\n"],
  ["a byte-order mark is a character", "\uFEFFx", "\uFEFFx"],
  // CSI sequences, removed whole
  ["SGR color", "a\x1b[31mred\x1b[0m.", "ared."],
  ["clear screen and home", "\x1b[2J\x1b[Hafter", "after"],
  ["private mode (alternate screen)", "\x1b[?1049hx\x1b[?1049l", "x"],
  ["cursor position report request (DSR)", "\x1b[6nx", "x"],
  ["device attributes request (DA)", "\x1b[cx\x1b[>0cy", "xy"],
  ["window manipulation (title report, resize)", "\x1b[21tx\x1b[8;100;100ty", "xy"],
  ["CSI with intermediates", "\x1b[1 qx", "x"],
  ["C1 CSI U+009B", "a\u009b31mb\u009b2Jc", "abc"],
  // OSC and other strings, removed whole
  ["OSC 52 clipboard write, BEL-terminated", "x\x1b]52;c;cm0gLXJmIH4=\x07y", "xy"],
  ["OSC 52 clipboard write, ST-terminated", "x\x1b]52;c;cm0gLXJmIH4=\x1b\\y", "xy"],
  ["OSC 52 clipboard read request", "\x1b]52;c;?\x07x", "x"],
  ["OSC 0 title", "\x1b]0;FAKE TITLE\x07x", "x"],
  ["OSC 8 hyperlink around text", "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\", "click"],
  ["OSC 10 color query", "\x1b]10;?\x07x", "x"],
  ["C1 OSC U+009D ... C1 ST U+009C", "a\u009d52;c;eA==\u009cb", "ab"],
  ["C1 OSC ended by BEL", "a\u009d0;t\x07b", "ab"],
  ["DCS (DECRQSS)", "\x1bP$qm\x1b\\x", "x"],
  ["DCS sixel", "\x1bPq#0;2;0;0;0#0~~\x1b\\x", "x"],
  ["C1 DCS U+0090", "\u0090$qm\u009cx", "x"],
  ["APC", "\x1b_payload\x1b\\x", "x"],
  ["PM", "\x1b^payload\x1b\\x", "x"],
  ["SOS", "\x1bXpayload\x1b\\x", "x"],
  ["C1 APC U+009F", "\u009fpayload\u009cx", "x"],
  ["a string cancelled by CAN", "\x1b]0;t\x18visible", "visible"],
  ["a string ended by another ESC sequence", "\x1b]0;t\x1b[31mx", "x"],
  // other ESC sequences
  ["full reset (RIS)", "\x1bcx", "x"],
  ["save and restore cursor", "\x1b7x\x1b8", "x"],
  ["charset designation", "\x1b(0x\x1b(B", "x"],
  ["DECALN screen fill", "\x1b#8x", "x"],
  ["keypad mode", "\x1b=x\x1b>", "x"],
  // lone controls: shown as "_"
  ["BEL", "a\x07b", "a_b"],
  ["backspaces that would overwrite text", "rm -rf /\b\b\b\b\b\b\b\bls     ", "rm -rf /________ls     "],
  ["NUL, form feed, vertical tab", "a\x00b\x0cc\x0bd", "a_b_c_d"],
  ["DEL", "a\x7fb", "a_b"],
  ["C1 NEL U+0085 and other C1", "a\u0085b\u0080c\u009ad", "a_b_c_d"],
  ["C1 ST alone", "a\u009cb", "a_b"],
  ["shift out / shift in (charset switching)", "a\x0eb\x0fc", "a_b_c"],
  // malformed: the sequence ends at the odd character, which is filtered as usual
  ["a newline inside a CSI", "\x1b[31\nm", "\nm"],
  ["a BEL inside a CSI", "\x1b[3\x07m", "_m"],
  ["ESC before a non-ASCII character", "\x1bé", "é"],
  ["ESC ESC [", "\x1b\x1b[31mx", "x"],
  ["ESC at the very end", "x\x1b", "x"],
  ["an unterminated OSC at the end", "x\x1b]52;c;AAAA", "x"],
  // bytes that are not UTF-8
  ["a raw 8-bit CSI byte 0x9B", Buffer.from([0x61, 0x9b, 0x33, 0x31, 0x6d, 0x62]), "a\uFFFD31mb"],
  ["a raw 8-bit OSC byte 0x9D", Buffer.from([0x61, 0x9d, 0x62]), "a\uFFFDb"],
  ["a truncated UTF-8 character at the end", Buffer.from([0x61, 0xe2, 0x82]), "a\uFFFD"],
  ["Latin-1 text", Buffer.from("caf\xe9\n", "latin1"), "caf\uFFFD\n"],
];

describe("EscapeFilter (UTF-8 terminal)", () => {
  it.each(table)("%s", (_what, input, want) => {
    expect(run(input)).toBe(want);
    expect(runBytewise(input)).toBe(want);
  });

  it("passes valid UTF-8 output byte for byte", () => {
    const text = Buffer.from("a long line of text: ünïcödé, 中文, emoji 🎉, tabs\tand\r\nnewlines\n".repeat(100));
    expect(Buffer.concat([new EscapeFilter({ utf8: true }).push(text)]).equals(text)).toBe(true);
  });

  it(`gives up on a CSI longer than ${MAX_SEQUENCE} characters and shows what follows`, () => {
    const long = `\x1b[${"1;".repeat(MAX_SEQUENCE)}`;
    const out = run(`${long}mtail`);
    expect(out.endsWith("mtail")).toBe(true);
    expect(out).not.toContain("\x1b");
  });

  it(`swallows at most ${MAX_STRING} characters of an unterminated string, then shows text again`, () => {
    const payload = "A".repeat(MAX_STRING + 10);
    const out = run(`\x1b]52;c;${payload}\nvisible`);
    expect(out.length).toBeLessThan(20 + "visible".length);
    expect(out.endsWith("\nvisible")).toBe(true);
    expect(out).not.toContain("\x1b");
  });

  it("never lets ESC, C1 or any control but \\t \\n \\r through, whatever the input", () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const alphabet = ["\x1b", "[", "]", "P", "\\", "\x07", "\x9b", "\x9c", "\u009b", "\u009d", "\u0090", "\x18", "a", "1", ";", "m", "\n", "\r", "\t", "\x00", "\x7f", "é", "\u0085"];
    for (let i = 0; i < 300; i++) {
      const parts = Array.from({ length: 1 + Math.floor(rand() * 40) }, () => alphabet[Math.floor(rand() * alphabet.length)]!);
      const input = Buffer.concat(parts.map((p) => (p === "\x9b" || p === "\x9c" ? Buffer.from([p.charCodeAt(0)]) : Buffer.from(p))));
      for (const out of [run(input), runBytewise(input)]) expect(out).not.toMatch(/[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]/);
    }
  });
});

describe("EscapeFilter (terminal not in UTF-8)", () => {
  it.each([
    ["ASCII passes", "plain\ttext\r\n", "plain\ttext\r\n"],
    ["non-ASCII becomes _ per character", "café 日本", "caf_ __"],
    ["a character whose UTF-8 holds 0x9B (U+06DB) becomes _", "a\u06dbb", "a_b"],
    ["escapes are still removed", "\x1b[31mx\x1b]0;t\x07", "x"],
  ])("%s", (_what, input, want) => {
    expect(run(input, { utf8: false })).toBe(want);
    expect(runBytewise(input, { utf8: false })).toBe(want);
  });

  it.each([
    [{ LANG: "en_US.UTF-8" }, true],
    [{ LANG: "C.utf8" }, true],
    [{ LC_ALL: "de_DE.UTF-8", LANG: "C" }, true],
    [{ LC_CTYPE: "en_US.UTF-8" }, true],
    [{ LC_ALL: "C", LANG: "en_US.UTF-8" }, false],
    [{ LANG: "en_US.ISO-8859-1" }, false],
    [{}, false],
  ])("localeIsUtf8(%j) is %s", (env, want) => {
    expect(localeIsUtf8(env)).toBe(want);
  });
});

describe("escapeFiltering: which of qvm run's streams are filtered", () => {
  it.each([
    // flag, pty, stdout tty, stderr tty → stdout, stderr
    [undefined, false, true, true, true, true],
    [undefined, false, false, true, false, true],
    [undefined, false, true, false, true, false],
    [undefined, false, false, false, false, false],
    [false, false, true, true, false, false],
    [true, false, false, false, true, true],
    [undefined, true, true, true, false, false],
    [false, true, true, true, false, false],
  ])("flag %s, pty %s, stdout tty %s, stderr tty %s → stdout %s, stderr %s", (flag, pty, stdoutIsTTY, stderrIsTTY, wantOut, wantErr) => {
    expect(escapeFiltering({ flag, pty, stdoutIsTTY, stderrIsTTY })).toEqual({ stdout: wantOut, stderr: wantErr });
  });
});
