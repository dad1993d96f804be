// Program windows on the page (docs/gui.md). The page draws each window's frame, label colour and
// title `[domain] program` from qvmd's data (the window list and the domain list), never from
// anything the domain sends. The window's pixels live in `<iframe sandbox="allow-scripts">`
// (display.ts: noVNC, an opaque origin), connected with a one-shot ticket from the server.
//
// Focus and input, the page's rules:
// - The keyboard focus never leaves the page: the focused window's <section> holds it, and the
//   page's own keydown/keyup listeners (capture phase, on `window`) see every key first. They
//   handle the clipboard chords (Ctrl-Shift-C/V: a `qvm-clipboard-chord` event on `window`, never
//   passed on) and post every other key to the focused window's frame only. If a click still
//   lands the focus in a frame, the page takes it back at once.
// - An unfocused window is covered by a page-owned shield: a click on it focuses the window, and
//   the frame stays view-only (no mouse, no keys) until then.
// - Move (drag the title bar), resize (the frame's corner; the page asks the server to resize the
//   domain's output) and close (the × button: the server asks the domain to close the program).
import { WINDOW_MAX_HEIGHT, WINDOW_MAX_WIDTH, WINDOW_MIN_HEIGHT, WINDOW_MIN_WIDTH, type PageMessage, type WindowSummary } from "@qvm/protocol/contracts";

export interface DisplayHost {
  desktop: HTMLElement;
  send(msg: PageMessage): void;
  /** The label colour of a domain, from qvmd's domain list. */
  colorOf(domain: string): string;
  notice(text: string, color: string): void;
}

/** What the page's chord handler hears: which window had the focus, and which chord. */
export interface ClipboardChord {
  domain: string;
  window: number;
  action: "copy" | "paste";
}

interface Display {
  info: WindowSummary;
  el: HTMLElement;
  title: HTMLElement;
  screen: HTMLElement;
  shield: HTMLElement;
  frame?: HTMLIFrameElement;
  /** The stream ended: a click on the shield asks for a new ticket. */
  ended: boolean;
  /** The last size asked of the server, so a resize is asked once. */
  asked: { width: number; height: number };
  dx: number;
  dy: number;
}

const TITLEBAR_PX = 22;
const RESIZE_DEBOUNCE_MS = 200;

const keyOf = (domain: string, window: number) => `${domain}/${window}`;
const clamp = (n: number, min: number, max: number) => Math.max(min, Math.min(max, Math.round(n)));

export class Displays {
  private readonly shown = new Map<string, Display>();
  private focused: Display | undefined;
  /** Keys swallowed on keydown (the chords): their keyup is swallowed too. */
  private readonly swallowed = new Set<string>();

  constructor(private readonly host: DisplayHost) {
    window.addEventListener("keydown", (e) => this.onKey(e), true);
    window.addEventListener("keyup", (e) => this.onKey(e), true);
    window.addEventListener("message", (e) => this.onFrameMessage(e));
    // Focus that moves elsewhere in the page (a terminal, a button) unfocuses the window; focus
    // that moves into a frame comes back to the page. Checked once the move is over.
    const check = () => setTimeout(() => this.checkFocus(), 0);
    document.addEventListener("focusin", check);
    document.addEventListener("focusout", check);
    window.addEventListener("blur", check);
  }

  /** qvmd's window list: new windows get a frame and a ticket, gone ones are closed with a notice. */
  update(windows: WindowSummary[]): void {
    const listed = new Set(windows.map((w) => keyOf(w.domain, w.id)));
    for (const [k, d] of this.shown) {
      if (listed.has(k)) continue;
      this.remove(d);
      this.host.notice(`[${d.info.domain}] ${d.info.program}: window closed`, this.host.colorOf(d.info.domain));
    }
    for (const w of windows) {
      const d = this.shown.get(keyOf(w.domain, w.id));
      if (d) {
        d.info = w;
        d.title.textContent = `[${w.domain}] ${w.program}`;
      } else {
        this.open(w);
      }
    }
  }

  /** The domain list changed: every frame takes its domain's colour again. */
  recolor(): void {
    for (const d of this.shown.values()) this.paint(d);
  }

  /**
   * The server's ticket for a window: its frame loads /display with it. With `reconnect`, it came
   * unasked: the stream had closed because qvmd stopped, and qvmd lists the window again.
   */
  ticket(domain: string, window: number, ticket: string, reconnect = false): void {
    const d = this.shown.get(keyOf(domain, window));
    if (!d) return;
    if (reconnect) this.host.notice(`[${domain}] ${d.info.program}: the stream was closed because qvmd restarted; reconnecting`, this.host.colorOf(domain));
    d.frame?.remove();
    const frame = document.createElement("iframe");
    // Scripts only: no same-origin (so no access to this page, its storage or its token), no
    // popups, forms, pointer lock, fullscreen, top navigation or modals.
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.title = `[${domain}] ${d.info.program}`;
    frame.src = `/display?${new URLSearchParams({ domain, window: String(window), ticket })}`;
    d.frame = frame;
    d.ended = false;
    d.el.dataset.stream = "connecting";
    d.shield.textContent = "";
    d.screen.prepend(frame);
    frame.addEventListener("load", () => this.tellFocus(d));
  }

  /** The window's stream ended (the domain stopped, the stream failed or was closed). */
  ended(domain: string, window: number, reason: string): void {
    const d = this.shown.get(keyOf(domain, window));
    if (!d) return;
    d.frame?.remove();
    d.frame = undefined;
    d.ended = true;
    d.el.dataset.stream = "ended";
    if (this.focused === d) this.unfocus();
    d.shield.textContent = `${reason}: click to reconnect`;
    this.host.notice(`[${domain}] ${d.info.program}: ${reason}`, this.host.colorOf(domain));
  }

  private open(w: WindowSummary): void {
    const el = document.createElement("section");
    el.className = "window display";
    el.dataset.domain = w.domain;
    el.dataset.window = String(w.id);
    el.tabIndex = -1;
    el.style.width = `${w.width}px`;
    el.style.height = `${w.height + TITLEBAR_PX}px`;
    const bar = document.createElement("div");
    bar.className = "titlebar";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = `[${w.domain}] ${w.program}`;
    const close = document.createElement("button");
    close.textContent = "×";
    close.title = "close the program's window";
    close.addEventListener("pointerdown", (e) => e.stopPropagation());
    close.addEventListener("click", () => this.host.send({ t: "window-close", domain: w.domain, window: w.id }));
    bar.append(title, close);
    const screen = document.createElement("div");
    screen.className = "screen";
    const shield = document.createElement("div");
    shield.className = "shield";
    screen.append(shield);
    el.append(bar, screen);
    const d: Display = { info: w, el, title, screen, shield, ended: false, asked: { width: w.width, height: w.height }, dx: 0, dy: 0 };
    this.shown.set(keyOf(w.domain, w.id), d);
    this.paint(d);
    this.host.desktop.append(el);

    shield.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      if (d.ended) this.host.send({ t: "window-ticket", domain: w.domain, window: w.id });
      else this.focus(d);
    });
    this.dragByTitle(d, bar);
    let timer: ReturnType<typeof setTimeout> | undefined;
    new ResizeObserver(() => {
      clearTimeout(timer);
      timer = setTimeout(() => this.resized(d), RESIZE_DEBOUNCE_MS);
    }).observe(screen);
    this.host.send({ t: "window-ticket", domain: w.domain, window: w.id });
  }

  private paint(d: Display): void {
    const color = this.host.colorOf(d.info.domain);
    d.el.style.borderColor = color;
    (d.el.firstElementChild as HTMLElement).style.background = color;
  }

  private remove(d: Display): void {
    if (this.focused === d) this.unfocus();
    this.shown.delete(keyOf(d.info.domain, d.info.id));
    d.el.remove();
  }

  private dragByTitle(d: Display, bar: HTMLElement): void {
    let from: { x: number; y: number; dx: number; dy: number } | undefined;
    bar.addEventListener("pointerdown", (e) => {
      this.focus(d);
      from = { x: e.clientX, y: e.clientY, dx: d.dx, dy: d.dy };
      // Every move goes to the bar, even over a frame.
      bar.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    bar.addEventListener("pointermove", (e) => {
      if (!from) return;
      d.dx = from.dx + e.clientX - from.x;
      d.dy = from.dy + e.clientY - from.y;
      d.el.style.transform = `translate(${d.dx}px, ${d.dy}px)`;
    });
    const stop = () => (from = undefined);
    bar.addEventListener("pointerup", stop);
    bar.addEventListener("pointercancel", stop);
  }

  /** The frame changed size: ask for the domain's output to follow (debounced, bounded). */
  private resized(d: Display): void {
    if (!this.shown.has(keyOf(d.info.domain, d.info.id))) return;
    const width = clamp(d.screen.clientWidth, WINDOW_MIN_WIDTH, WINDOW_MAX_WIDTH);
    const height = clamp(d.screen.clientHeight, WINDOW_MIN_HEIGHT, WINDOW_MAX_HEIGHT);
    if (width === d.asked.width && height === d.asked.height) return;
    d.asked = { width, height };
    this.host.send({ t: "window-resize", domain: d.info.domain, window: d.info.id, width, height });
  }

  private focus(d: Display): void {
    if (this.focused !== d) {
      const before = this.focused;
      this.focused = d;
      if (before) this.tellFocus(before);
      for (const x of this.shown.values()) x.el.classList.toggle("focused", x === d);
    }
    this.tellFocus(d);
    d.el.focus({ preventScroll: true });
  }

  private unfocus(): void {
    const d = this.focused;
    if (!d) return;
    this.focused = undefined;
    d.el.classList.remove("focused");
    this.tellFocus(d);
  }

  private tellFocus(d: Display): void {
    d.frame?.contentWindow?.postMessage({ t: "focus", focused: this.focused === d }, "*");
  }

  /**
   * Keyboard focus inside a frame goes back to the page (to the focused window, or to nothing);
   * focus elsewhere in the page unfocuses the window. While the browser window itself is in the
   * background, the focused window stays focused.
   */
  private checkFocus(): void {
    const a = document.activeElement;
    if (a instanceof HTMLIFrameElement) {
      if (this.focused?.frame === a) this.focused.el.focus({ preventScroll: true });
      else a.blur();
      return;
    }
    if (this.focused && !this.focused.el.contains(a) && document.hasFocus()) this.unfocus();
  }

  private onKey(e: KeyboardEvent): void {
    const d = this.focused;
    if (!d || !d.el.contains(document.activeElement)) return;
    e.preventDefault();
    e.stopPropagation();
    if (e.type === "keyup" && this.swallowed.delete(e.code)) return;
    const chord = e.type === "keydown" && e.ctrlKey && e.shiftKey && !e.altKey && !e.metaKey ? { KeyC: "copy", KeyV: "paste" }[e.code] : undefined;
    if (chord) {
      // Handled by the page only, never by a frame (the clipboard: docs/gui.md).
      this.swallowed.add(e.code);
      const detail: ClipboardChord = { domain: d.info.domain, window: d.info.id, action: chord as ClipboardChord["action"] };
      window.dispatchEvent(new CustomEvent("qvm-clipboard-chord", { detail }));
      return;
    }
    d.frame?.contentWindow?.postMessage(
      {
        t: "key",
        type: e.type,
        key: e.key,
        code: e.code,
        location: e.location,
        repeat: e.repeat,
        ctrl: e.ctrlKey,
        shift: e.shiftKey,
        alt: e.altKey,
        meta: e.metaKey,
        caps: e.getModifierState("CapsLock"),
        num: e.getModifierState("NumLock"),
      },
      "*",
    );
  }

  /** A frame's note about its stream: untrusted, so only a known word is taken, and only from that frame. */
  private onFrameMessage(e: MessageEvent): void {
    for (const d of this.shown.values()) {
      if (!d.frame || e.source !== d.frame.contentWindow) continue;
      const m = e.data as { t?: unknown; state?: unknown } | null;
      if (m?.t === "state" && (m.state === "connected" || m.state === "disconnected")) d.el.dataset.stream = m.state;
      return;
    }
  }
}
