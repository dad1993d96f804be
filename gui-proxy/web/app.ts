// The web shell page. It is the trusted side: every frame, title and label color is drawn here
// from qvmd's domain list; a domain only fills the inside of its terminals, and its bytes go to
// xterm.js as data (never into the DOM as HTML). Protocol: docs/web-shell.md; its messages are
// the contract's schema (@qvm/protocol/contracts), which this page parses what it receives with.
// Access (docs/web-shell.md): the token arrives in the URL's fragment and is offered on the
// WebSocket only; the page itself is public.
// Program windows (windows.ts, docs/gui.md) share the desktop with the terminals.
// The global clipboard (docs/web-shell.md, "Clipboard"): Ctrl-Shift-C / Ctrl-Shift-V in a focused
// window or terminal are kept by the page (never passed to the domain) and become requests to the
// server, which asks qvmd; a panel shows the clipboard's state (source, size) from the server, and
// two explicit controls move text between it and the user's own desktop clipboard.
// Encrypted domains (docs/web-shell.md, "Encrypted domains"): when the server says a start needs
// the passphrase (or the one given was wrong), the page asks for it in a modal dialog of its own
// (the page is the trusted side) and sends the start again with it; the input is emptied at once.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { MAX_CLIPBOARD_BYTES, MAX_SHELL_PASSPHRASE, serverMessageSchema, type DomainSummary, type PageMessage, type ServerMessage, type TerminalKind } from "@qvm/protocol/contracts";
import { LABELS, isLabel } from "@qvm/protocol/labels";
import { Displays, type ClipboardChord } from "./windows.js";

interface Win {
  el: HTMLElement;
  term: Terminal;
  domain: string;
}

const list = document.getElementById("domain-list")!;
const desktop = document.getElementById("desktop")!;
const notices = document.getElementById("notices")!;
const windows = new Map<number, Win>();
let domains: DomainSummary[] = [];
let nextId = 1;

/** Where the page keeps the token: this tab only, this origin (port included) only. */
const TOKEN_KEY = "qvm-shell-token";
/** The subprotocols of gui-proxy/src/access.ts: ours, and the one that carries the token. */
const SHELL_PROTOCOL = "qvm-shell.v1";
const TOKEN_PROTOCOL_PREFIX = "qvm-token.";

/**
 * The access token: from the URL's fragment (`#token=…`, which the browser never sends to a
 * server) into sessionStorage, and out of the address bar and history at once, so it is neither
 * shown nor kept; a reload of this tab finds it in sessionStorage.
 */
function takeToken(): string | null {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl !== null) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  // A subprotocol name is an HTTP token; anything else could not have come from `qvm shell`.
  return token && /^[A-Za-z0-9_-]+$/.test(token) ? token : null;
}

const token = takeToken();
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, token ? [SHELL_PROTOCOL, TOKEN_PROTOCOL_PREFIX + token] : [SHELL_PROTOCOL]);
ws.binaryType = "arraybuffer";
let connected = false;
ws.addEventListener("open", () => (connected = true));

const colorOf = (label: string) => (isLabel(label) ? LABELS[label] : "#888888");
const colorOfDomain = (domain: string) => colorOf(domains.find((d) => d.name === domain)?.label ?? "");
const send = (msg: PageMessage) => ws.send(JSON.stringify(msg));

const displays = new Displays({
  desktop,
  send,
  colorOf: colorOfDomain,
  notice: (text, color) => notice(text, color),
});

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls = "", text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

/** A notice in the corner; it goes after `ms` (0: it stays). */
function notice(text: string, color = "#888888", ms = 8000): void {
  const n = el("div", "notice", text);
  n.style.borderLeftColor = color;
  notices.append(n);
  if (ms > 0) setTimeout(() => n.remove(), ms);
}

function button(text: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", "", text);
  b.addEventListener("click", onClick);
  return b;
}

function renderDomains(): void {
  list.replaceChildren(
    ...domains.map((d) => {
      const li = el("li", "domain");
      li.dataset.domain = d.name;
      li.dataset.state = d.state;
      li.style.borderLeftColor = colorOf(d.label);
      li.append(el("span", "name", d.name), el("span", "state", d.state), el("div", "class", `${d.class}, ${d.label}`));
      const running = d.state === "Running";
      if (d.state === "Halted") li.append(button("Start", () => send({ t: "start", domain: d.name })));
      if (running || d.state === "Paused") li.append(button("Stop", () => send({ t: "shutdown", domain: d.name })));
      if (running) li.append(button("Pause", () => send({ t: "pause", domain: d.name })));
      if (d.state === "Paused") li.append(button("Unpause", () => send({ t: "unpause", domain: d.name })));
      if (running) li.append(button("Terminal", () => openWindow(d, "shell")), button("Console", () => openWindow(d, "console")));
      return li;
    }),
  );
}

function openWindow(d: DomainSummary, kind: TerminalKind): void {
  const id = nextId++;
  const color = colorOf(d.label);
  const win = el("section", "window");
  win.dataset.domain = d.name;
  win.dataset.id = String(id);
  win.style.borderColor = color;
  const bar = el("div", "titlebar");
  bar.style.background = color;
  bar.append(el("span", "title", `[${d.name}] ${kind === "shell" ? "terminal" : "console"}`), button("×", () => send({ t: "close", id })));
  const body = el("div", "term");
  win.append(bar, body);
  desktop.append(win);
  const term = new Terminal({ convertEol: kind === "console", scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(body);
  fit.fit();
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, id);
  const encoder = new TextEncoder();
  term.onData((s) => {
    const bytes = encoder.encode(s);
    const frame = new Uint8Array(4 + bytes.length);
    frame.set(header);
    frame.set(bytes, 4);
    ws.send(frame);
  });
  term.onResize(({ rows, cols }) => send({ t: "resize", id, rows, cols }));
  // The clipboard chords are the page's: xterm never sees them, so the domain gets no ^C or ^V.
  term.attachCustomKeyEventHandler((e) => {
    const chord = clipboardChord(e);
    if (!chord) return true;
    e.preventDefault();
    if (e.type === "keydown" && !e.repeat) {
      if (chord === "copy") copyFromTerminal(id);
      else send({ t: "terminal-paste", id });
    }
    return false;
  });
  new ResizeObserver(() => fit.fit()).observe(body);
  windows.set(id, { el: win, term, domain: d.name });
  send({ t: "open", id, domain: d.name, kind, rows: term.rows, cols: term.cols });
  term.focus();
}

/** Ctrl-Shift-C or Ctrl-Shift-V (no other modifier), by key position, whatever the layout. */
function clipboardChord(e: KeyboardEvent): ClipboardChord["action"] | undefined {
  if (!e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return undefined;
  return e.code === "KeyC" ? "copy" : e.code === "KeyV" ? "paste" : undefined;
}

const utf8Bytes = (s: string) => new TextEncoder().encode(s).length;
const sizeText = (n: number) => `${n} byte${n === 1 ? "" : "s"}${n >= 1024 ? ` (${(n / 1024).toFixed(1)} KiB)` : ""}`;
const nameOf = (source: string) => (source === "dom0" ? "[dom0] (your desktop)" : `[${source}]`);

/** A terminal's selection into the global clipboard; the server says which domain it came from. */
function copyFromTerminal(id: number): void {
  const w = windows.get(id);
  if (!w) return;
  const text = w.term.getSelection();
  if (!text) return notice(`[${w.domain}] terminal: select text first, then press Ctrl-Shift-C`, colorOfDomain(w.domain));
  const n = utf8Bytes(text);
  if (n > MAX_CLIPBOARD_BYTES) return notice(`the selection is ${sizeText(n)}, more than the global clipboard holds (${MAX_CLIPBOARD_BYTES} bytes)`, "#cc0000");
  send({ t: "terminal-copy", id, text });
}

// Ctrl-Shift-C / Ctrl-Shift-V in a focused program window (windows.ts keeps them from its frame).
window.addEventListener("qvm-clipboard-chord", (e) => {
  const { domain, window: win, action } = (e as CustomEvent<ClipboardChord>).detail;
  send({ t: action === "copy" ? "clipboard-copy" : "clipboard-paste", domain, window: win });
});

// The clipboard panel: its state (never its content) from the server, and the desktop controls.
const clip = {
  panel: document.getElementById("clipboard")!,
  state: document.getElementById("clipboard-state")!,
  fromDesktop: document.getElementById("clipboard-from-desktop") as HTMLButtonElement,
  toDesktop: document.getElementById("clipboard-to-desktop") as HTMLButtonElement,
  inBox: document.getElementById("clipboard-in")!,
  inText: document.getElementById("clipboard-in-text") as HTMLTextAreaElement,
  outBox: document.getElementById("clipboard-out")!,
  outText: document.getElementById("clipboard-out-text") as HTMLTextAreaElement,
};
let clipState: Extract<ServerMessage, { t: "clipboard" }> = { t: "clipboard", source: "", size: 0, copiedAtMs: 0 };

function renderClipboard(): void {
  const s = clipState;
  clip.panel.dataset.source = s.source;
  clip.panel.style.borderLeftColor = s.source ? colorOfDomain(s.source) : "#444444";
  clip.state.textContent = s.source ? `${sizeText(s.size)} from ${nameOf(s.source)}, copied at ${new Date(s.copiedAtMs).toLocaleTimeString()}` : "empty";
  clip.toDesktop.disabled = !s.source;
}

clip.fromDesktop.addEventListener("click", () => {
  clip.inBox.hidden = false;
  clip.inText.focus();
});
document.getElementById("clipboard-in-cancel")!.addEventListener("click", () => {
  clip.inText.value = "";
  clip.inBox.hidden = true;
});
document.getElementById("clipboard-in-send")!.addEventListener("click", () => {
  const text = clip.inText.value;
  if (!text) return notice("nothing to copy: paste your desktop's text into the box first", "#cc0000");
  const n = utf8Bytes(text);
  if (n > MAX_CLIPBOARD_BYTES) return notice(`the text is ${sizeText(n)}, more than the global clipboard holds (${MAX_CLIPBOARD_BYTES} bytes)`, "#cc0000");
  send({ t: "clipboard-set", text });
  clip.inText.value = "";
  clip.inBox.hidden = true;
});
clip.toDesktop.addEventListener("click", () => send({ t: "clipboard-take" }));
document.getElementById("clipboard-out-done")!.addEventListener("click", () => {
  clip.outText.value = "";
  clip.outBox.hidden = true;
});

/** The global clipboard's text (taken, so wiped there) into the desktop's clipboard, or into a box to copy from. */
function toDesktop(text: string, source: string): void {
  const fallback = (why: string) => {
    clip.outText.value = text;
    clip.outBox.hidden = false;
    clip.outText.focus();
    clip.outText.select();
    notice(`the browser did not let the page write your desktop's clipboard (${why}): the text from ${nameOf(source)} is in the box under the global clipboard; copy it from there`, colorOfDomain(source));
  };
  if (!navigator.clipboard?.writeText) return fallback("no clipboard API here");
  navigator.clipboard.writeText(text).then(
    () => notice(`Global clipboard from ${nameOf(source)} copied to your desktop's clipboard and wiped`, colorOfDomain(source)),
    (err: unknown) => fallback(err instanceof Error ? err.message : String(err)),
  );
}

function clipboardMessage(msg: Extract<ServerMessage, { t: "clipboard" | "clipboard-copied" | "clipboard-pasted" | "terminal-paste-text" | "clipboard-taken" }>): void {
  switch (msg.t) {
    case "clipboard":
      clipState = msg;
      return renderClipboard();
    case "clipboard-copied":
      return notice(`Copied ${sizeText(msg.size)} from ${nameOf(msg.source)} to the global clipboard. Press Ctrl-Shift-V in a domain's window to paste`, colorOfDomain(msg.source));
    case "clipboard-pasted":
      return notice(`Global clipboard pasted into [${msg.target}] and wiped`, colorOfDomain(msg.target));
    case "terminal-paste-text": {
      const w = windows.get(msg.id);
      if (!w) return notice("the terminal closed before the paste arrived; the global clipboard was wiped", "#cc0000");
      // As a paste: xterm brackets it when the domain's program asked for bracketed paste.
      w.term.paste(msg.text);
      return notice(`Global clipboard pasted into [${w.domain}] and wiped`, colorOfDomain(w.domain));
    }
    case "clipboard-taken":
      return toDesktop(msg.text, msg.source);
  }
}

// The unlock dialog: one at a time, for the domain the latest passphrase-needed named. The
// passphrase stays in the input only until it is sent or the dialog is closed.
const unlock = {
  dialog: document.getElementById("unlock") as HTMLDialogElement,
  form: document.getElementById("unlock-form") as HTMLFormElement,
  title: document.getElementById("unlock-title")!,
  wrong: document.getElementById("unlock-wrong")!,
  input: document.getElementById("unlock-passphrase") as HTMLInputElement,
  domain: "",
};
unlock.input.maxLength = MAX_SHELL_PASSPHRASE;

function askPassphrase(domain: string, reason: "required" | "wrong"): void {
  unlock.domain = domain;
  unlock.title.textContent = `Unlock ${domain}`;
  unlock.dialog.style.borderLeftColor = colorOfDomain(domain);
  unlock.wrong.hidden = reason !== "wrong";
  unlock.input.value = "";
  if (!unlock.dialog.open) unlock.dialog.showModal();
  unlock.input.focus();
}

function closeUnlock(): void {
  unlock.input.value = "";
  unlock.domain = "";
  if (unlock.dialog.open) unlock.dialog.close();
}

// Enter in the input submits the form; the Unlock button too.
unlock.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const passphrase = unlock.input.value;
  const domain = unlock.domain;
  unlock.input.value = "";
  if (!passphrase || !domain) return unlock.input.focus();
  closeUnlock();
  send({ t: "start", domain, passphrase });
});
document.getElementById("unlock-cancel")!.addEventListener("click", closeUnlock);
// Escape: the browser closes a modal dialog by itself (its `cancel`, then `close`); however it
// closed, the input is emptied as with Cancel.
unlock.dialog.addEventListener("close", () => {
  unlock.input.value = "";
  unlock.domain = "";
});

function closeWindow(id: number, reason: string): void {
  const w = windows.get(id);
  if (!w) return;
  windows.delete(id);
  w.term.dispose();
  w.el.remove();
  const d = domains.find((x) => x.name === w.domain);
  notice(`[${w.domain}] window closed: ${reason}`, colorOf(d?.label ?? ""));
}

ws.addEventListener("message", (ev) => {
  if (ev.data instanceof ArrayBuffer) {
    const id = new DataView(ev.data).getUint32(0);
    windows.get(id)?.term.write(new Uint8Array(ev.data, 4));
    return;
  }
  const r = serverMessageSchema.safeParse(parseJson(String(ev.data)));
  if (!r.success) return notice("the server sent a message this page does not understand: reload the page", "#cc0000");
  const msg = r.data;
  switch (msg.t) {
    case "domains":
      domains = msg.domains;
      renderDomains();
      displays.recolor();
      renderClipboard();
      return;
    case "windows":
      return displays.update(msg.windows);
    case "window-ticket":
      return displays.ticket(msg.domain, msg.window, msg.ticket, msg.reconnect === true);
    case "window-ended":
      return displays.ended(msg.domain, msg.window, msg.reason);
    case "closed":
      return closeWindow(msg.id, msg.reason);
    case "clipboard":
    case "clipboard-copied":
    case "clipboard-pasted":
    case "terminal-paste-text":
    case "clipboard-taken":
      return clipboardMessage(msg);
    case "passphrase-needed":
      return askPassphrase(msg.domain, msg.reason);
    case "error":
      notice(`error: ${msg.message}`, "#cc0000");
      if (msg.id !== undefined) closeWindow(msg.id, msg.message);
      return;
    // "event" and "opened" need nothing here: a "domains" message follows every change that
    // shows, and the window was made when it was asked for.
  }
});

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
ws.addEventListener("close", () => {
  if (connected) return notice("disconnected from qvm shell; reload the page", "#cc0000", 0);
  // The server refused the connection (it says no more to a browser): most likely the token.
  sessionStorage.removeItem(TOKEN_KEY);
  notice(
    token
      ? "qvm shell refused this page's access token: open the URL that `qvm shell` printed (…/#token=…) again"
      : "no access token: open the URL that `qvm shell` printed (…/#token=…)",
    "#cc0000",
    0,
  );
});
