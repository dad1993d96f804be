// The web shell page. It is the trusted side: every frame, title and label color is drawn here
// from qvmd's domain list; a domain only fills the inside of its terminals, and its bytes go to
// xterm.js as data (never into the DOM as HTML). Protocol: docs/web-shell.md; its messages are
// the contract's schema (@qvm/protocol/contracts), which this page parses what it receives with.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { serverMessageSchema, type DomainSummary, type PageMessage, type TerminalKind } from "@qvm/protocol/contracts";
import { LABELS, isLabel } from "@qvm/protocol/labels";

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

const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.binaryType = "arraybuffer";

const colorOf = (label: string) => (isLabel(label) ? LABELS[label] : "#888888");
const send = (msg: PageMessage) => ws.send(JSON.stringify(msg));

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls = "", text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function notice(text: string, color = "#888888"): void {
  const n = el("div", "notice", text);
  n.style.borderLeftColor = color;
  notices.append(n);
  setTimeout(() => n.remove(), 8000);
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
      return;
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
ws.addEventListener("close", () => notice("disconnected from qvm shell; reload the page", "#cc0000"));
