// A window's display frame (docs/gui.md): runs in `<iframe sandbox="allow-scripts">`, an opaque
// origin with no access to the page, its token or its WebSocket. It connects noVNC to
// /display-ws with the one-shot ticket in its own URL and draws the domain's pixels; that is all
// a domain's bytes ever reach. It never shows or passes on what the RFB server says about itself
// (desktop name, clipboard, bell): the page draws the frame and title from qvmd's data.
//
// Input: the page keeps the keyboard focus and forwards each key of the focused window here as a
// message (so its own keydown handler sees every key, the clipboard chords included, before any
// frame does); the mouse reaches this frame directly only while its window is focused (the page
// covers unfocused windows). noVNC sends input only while `viewOnly` is off, i.e. while the
// page says this window has the focus.
// noVNC 1.7 uses top-level await: this is bundled as an ES module and loaded as a module script.
import RFB from "@novnc/novnc";

const screen = document.getElementById("screen")!;
document.documentElement.style.cssText = "height: 100%; margin: 0; overflow: hidden; background: #000";
document.body.style.cssText = "height: 100%; margin: 0; overflow: hidden";
screen.style.cssText = "width: 100%; height: 100%";

// The URL this frame was loaded with carries (domain, window, ticket); the WebSocket takes the
// same three. This document's origin is opaque, but its location is still the server's.
const params = new URLSearchParams(location.search);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/display-ws?${new URLSearchParams({
  domain: params.get("domain") ?? "",
  window: params.get("window") ?? "",
  ticket: params.get("ticket") ?? "",
})}`;

const rfb = new RFB(screen, wsUrl, { shared: true, wsProtocols: [] });
rfb.viewOnly = true;
rfb.focusOnClick = false;
rfb.scaleViewport = false;
rfb.clipViewport = false;
// The domain's output follows the frame's size through an agent call, not RFB's SetDesktopSize.
rfb.resizeSession = false;
rfb.background = "#000";

/** Tells the page how the stream is doing; the page treats it as untrusted (a hint, nothing shown verbatim). */
function tell(state: "connected" | "disconnected"): void {
  window.parent.postMessage({ t: "state", state }, "*");
}
rfb.addEventListener("connect", () => tell("connected"));
rfb.addEventListener("disconnect", () => tell("disconnected"));
// "desktopname", "clipboard" and "bell" come from the domain: deliberately not listened to.

interface KeyMessage {
  t: "key";
  type: "keydown" | "keyup";
  key: string;
  code: string;
  location: number;
  repeat: boolean;
  ctrl: boolean;
  shift: boolean;
  alt: boolean;
  meta: boolean;
  caps: boolean;
  num: boolean;
}

function isKeyMessage(m: Record<string, unknown>): m is Record<string, unknown> & KeyMessage {
  return (
    m.t === "key" &&
    (m.type === "keydown" || m.type === "keyup") &&
    typeof m.key === "string" &&
    m.key.length <= 32 &&
    typeof m.code === "string" &&
    m.code.length <= 32 &&
    typeof m.location === "number" &&
    ["repeat", "ctrl", "shift", "alt", "meta", "caps", "num"].every((k) => typeof m[k] === "boolean")
  );
}

window.addEventListener("message", (ev: MessageEvent) => {
  // Only the page that framed this document gives it input.
  if (ev.source !== window.parent || typeof ev.data !== "object" || ev.data === null) return;
  const m = ev.data as Record<string, unknown>;
  const canvas = screen.querySelector("canvas");
  if (m.t === "focus" && typeof m.focused === "boolean") {
    rfb.viewOnly = !m.focused;
    // noVNC releases every key it holds down when its canvas loses focus.
    if (!m.focused) canvas?.dispatchEvent(new FocusEvent("blur"));
    return;
  }
  if (isKeyMessage(m) && !rfb.viewOnly && canvas) {
    // noVNC's keyboard handler listens on its canvas and reads key, code and the modifiers.
    canvas.dispatchEvent(
      new KeyboardEvent(m.type, {
        key: m.key,
        code: m.code,
        location: m.location,
        repeat: m.repeat,
        ctrlKey: m.ctrl,
        shiftKey: m.shift,
        altKey: m.alt,
        metaKey: m.meta,
        modifierCapsLock: m.caps,
        modifierNumLock: m.num,
        bubbles: true,
        cancelable: true,
      }),
    );
  }
});
