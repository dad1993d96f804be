// The web shell page. It is the trusted side: every frame, title and label color is drawn here
// from qvmd's domain list; a domain only fills the inside of its terminals, and its bytes go to
// xterm.js as data (never into the DOM as HTML). Protocol: docs/web-shell.md; its messages are
// the contract's schema (@qvm/protocol/contracts), which this page parses what it receives with.
// Access (docs/web-shell.md): the token arrives in the URL's fragment and is offered on the
// WebSocket only; the page itself is public.
// Program windows (windows.ts, docs/gui.md) share the desktop with the terminals.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { serverMessageSchema, type DomainSummary, type PageMessage, type TerminalKind } from "@qvm/protocol/contracts";
import { LABELS, isLabel } from "@qvm/protocol/labels";
import { Displays } from "./windows.js";

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
const send = (msg: PageMessage) => ws.send(JSON.stringify(msg));

const displays = new Displays({
  desktop,
  send,
  colorOf: (domain) => colorOf(domains.find((d) => d.name === domain)?.label ?? ""),
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
  new ResizeObserver(() => fit.fit()).observe(body);
  windows.set(id, { el: win, term, domain: d.name });
  send({ t: "open", id, domain: d.name, kind, rows: term.rows, cols: term.cols });
  term.focus();
}

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
      return;
    case "windows":
      return displays.update(msg.windows);
    case "window-ticket":
      return displays.ticket(msg.domain, msg.window, msg.ticket);
    case "window-ended":
      return displays.ended(msg.domain, msg.window, msg.reason);
    case "closed":
      return closeWindow(msg.id, msg.reason);
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
