import { describe, expect, it } from "vitest";
import { MAX_USB_DEVICES, MAX_USB_INTERFACES, MAX_USB_STRING } from "@qvm/protocol/contracts";
import { parseGuestExecResponse, parseGuestInfo, parseGuestPing, parseListWindowsReply, parseOpenWindowReply, parseUsbDeviceList, parseWindowClipboardReply, quoteGuestText, usbText } from "./replies.js";

describe("validation of guest agent replies", () => {
  it("accepts a well-formed GetInfo", () => {
    const info = { kernelRelease: "6.1.0-56-amd64", uptimeSeconds: 3.2, agentVersion: "0.1.0", hostname: "work" };
    expect(parseGuestInfo(info)).toEqual(info);
  });

  it.each([
    ["an oversized kernel release", { kernelRelease: "x".repeat(10_000), uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
    ["control characters", { kernelRelease: "6.1\x1b[2J", uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
    ["a negative uptime", { kernelRelease: "6.1", uptimeSeconds: -1, agentVersion: "1", hostname: "h" }],
    ["a non-finite uptime", { kernelRelease: "6.1", uptimeSeconds: Infinity, agentVersion: "1", hostname: "h" }],
    ["an empty kernel release", { kernelRelease: "", uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
  ])("rejects GetInfo with %s", (_what, info) => {
    expect(() => parseGuestInfo(info)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("rejects a Ping whose version is not printable", () => {
    expect(() => parseGuestPing({ agentVersion: "\u0000" })).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("accepts each Exec message kind", () => {
    expect(parseGuestExecResponse({ msg: { $case: "started", value: { execId: 1, pid: 42, dataChannel: false, stdinWindow: 0 } } })).toEqual({ kind: "started", execId: 1, pid: 42, dataChannel: false, stdinWindow: 0 });
    expect(parseGuestExecResponse({ msg: { $case: "started", value: { execId: 2, pid: 43, dataChannel: true, stdinWindow: 131072 } } })).toMatchObject({ dataChannel: true, stdinWindow: 131072 });
    expect(parseGuestExecResponse({ msg: { $case: "stdout", value: Buffer.from("hi") } })).toEqual({ kind: "stdout", data: Buffer.from("hi") });
    expect(parseGuestExecResponse({ msg: { $case: "exit", value: { code: 3, signal: "" } } })).toEqual({ kind: "exit", code: 3, signal: null });
    expect(parseGuestExecResponse({ msg: { $case: "exit", value: { code: -1, signal: "SIGKILL" } } })).toEqual({ kind: "exit", code: null, signal: "SIGKILL" });
  });

  it.each([
    ["an empty message", { msg: undefined }],
    ["exec id 0", { msg: { $case: "started" as const, value: { execId: 0, pid: 1 } } }],
    ["a stdin window smaller than one frame", { msg: { $case: "started" as const, value: { execId: 1, pid: 1, dataChannel: true, stdinWindow: 100 } } }],
    ["a stdin window over 16 MiB", { msg: { $case: "started" as const, value: { execId: 1, pid: 1, dataChannel: true, stdinWindow: 2 ** 31 } } }],
    ["an oversized output chunk", { msg: { $case: "stderr" as const, value: Buffer.alloc(1024 * 1024) } }],
    ["an exit code above 255", { msg: { $case: "exit" as const, value: { code: 300, signal: "" } } }],
    ["a negative exit code", { msg: { $case: "exit" as const, value: { code: -5, signal: "" } } }],
    ["an invented signal", { msg: { $case: "exit" as const, value: { code: 0, signal: "SIGEVIL; rm -rf /" } } }],
  ])("rejects an Exec message with %s", (_what, msg) => {
    expect(() => parseGuestExecResponse(msg as never)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("clips and escapes guest text before it reaches an error message", () => {
    const q = quoteGuestText(`\x1b]0;evil\x07${"a".repeat(1000)}`);
    expect(q.length).toBeLessThan(230);
    expect(q).not.toContain("\x1b");
  });

  it.each([
    ["ESC and BEL (C0, as JSON does)", "\x1b]0;t\x07", '"\\u001b]0;t\\u0007"'],
    ["DEL", "a\x7fb", '"a\\u007fb"'],
    ["C1 CSI U+009B", "a\u009b31mb", '"a\\u009b31mb"'],
    ["C1 OSC U+009D ... ST U+009C", "\u009d52;c;eA==\u009c", '"\\u009d52;c;eA==\\u009c"'],
    ["C1 NEL U+0085", "a\u0085b", '"a\\u0085b"'],
    ["right-to-left override U+202E", "exit\u202E0 edoc", '"exit\\u202e0 edoc"'],
    ["isolates U+2066..U+2069", "\u2066a\u2069", '"\\u2066a\\u2069"'],
    ["zero-width space and joiner", "a\u200Bb\u200Dc", '"a\\u200bb\\u200dc"'],
    ["byte-order mark", "\uFEFFx", '"\\ufeffx"'],
    ["line and paragraph separators", "a\u2028b\u2029c", '"a\\u2028b\\u2029c"'],
    ["a tag character (two UTF-16 units)", "a\u{E0041}", '"a\\udb40\\udc41"'],
    ["plain and non-ASCII text, unchanged", "héllo 日本 😀 \u00a0", '"héllo 日本 😀 \u00a0"'],
  ])("escapes %s", (_what, text, want) => {
    const q = quoteGuestText(text);
    expect(q).toBe(want);
    expect(JSON.parse(q)).toBe(text); // still JSON, meaning the same text
  });
});

describe("validation of the guest's window replies", () => {
  const w = (n: number, over: Record<string, unknown> = {}) => ({ windowId: n, vsockPort: 20000 + n, width: 800, height: 600, alive: true, ...over });
  const bad = (f: () => unknown) => expect(f).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));

  it("accepts an OpenWindow reply and a window list within bounds", () => {
    expect(parseOpenWindowReply({ windowId: 1, vsockPort: 20000 })).toEqual({ windowId: 1, vsockPort: 20000 });
    const list = { windows: [w(1), w(2, { alive: false, width: 3840, height: 2160 }), w(3, { width: 64, height: 64 })] };
    expect(parseListWindowsReply(list)).toEqual(list);
    expect(parseListWindowsReply({ windows: [] })).toEqual({ windows: [] });
  });

  it("rejects ports outside the windows' range, ids of 0, and sizes out of bounds", () => {
    for (const vsockPort of [1024, 50, 19999, 20256, 20000.5]) bad(() => parseOpenWindowReply({ windowId: 1, vsockPort }));
    bad(() => parseOpenWindowReply({ windowId: 0, vsockPort: 20000 }));
    for (const over of [{ width: 63 }, { width: 3841 }, { height: 2161 }, { height: 0 }, { alive: "yes" }]) bad(() => parseListWindowsReply({ windows: [w(1, over)] }));
  });

  it("rejects a list with too many windows, a window twice or two on one port", () => {
    bad(() => parseListWindowsReply({ windows: Array.from({ length: 9 }, (_, i) => w(i + 1)) }));
    expect(parseListWindowsReply({ windows: Array.from({ length: 16 }, (_, i) => w(i + 1, { alive: i >= 8 })) }).windows).toHaveLength(16);
    bad(() => parseListWindowsReply({ windows: Array.from({ length: 17 }, (_, i) => w(i + 1, { alive: false })) }));
    bad(() => parseListWindowsReply({ windows: [w(1), w(1, { vsockPort: 20005 })] }));
    bad(() => parseListWindowsReply({ windows: [w(1), w(2, { vsockPort: 20001 })] }));
  });
});

describe("validation of the guest's clipboard replies", () => {
  it("passes data within the bound on, and refuses more than the bound as oversized without the data", () => {
    expect(parseWindowClipboardReply({ data: Buffer.from("abc"), oversized: false }, 3)).toEqual({ data: Buffer.from("abc"), oversized: false });
    expect(parseWindowClipboardReply({ data: Buffer.from("abcd"), oversized: false }, 3)).toEqual({ data: Buffer.alloc(0), oversized: true });
    expect(parseWindowClipboardReply({ data: Buffer.from("abc"), oversized: true }, 3)).toEqual({ data: Buffer.alloc(0), oversized: true });
  });

  it("rejects a reply that is not bytes and a flag", () => {
    for (const bad of [{ data: "text", oversized: false }, { data: Buffer.alloc(1), oversized: "no" }, {}]) {
      expect(() => parseWindowClipboardReply(bad, 10)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
    }
  });
});

describe("validation of a backend's USB device list", () => {
  const dev = (more: Record<string, unknown> = {}) => ({
    busid: "2-1",
    vendorId: "0951",
    productId: "1666",
    manufacturer: "Kingston",
    product: "DataTraveler 3.0",
    serial: "60A44C413",
    deviceClass: 0,
    interfaces: [{ class: 8, subclass: 6, protocol: 80 }],
    driver: "usb",
    ...more,
  });

  it("passes a well-formed device on, ids in lower case", () => {
    const list = parseUsbDeviceList({ devices: [dev({ vendorId: "ABCD" })] });
    expect(list).toEqual({
      devices: [{ busid: "2-1", vendorId: "abcd", productId: "1666", manufacturer: "Kingston", product: "DataTraveler 3.0", serial: "60A44C413", deviceClass: 0, interfaces: [{ class: 8, subclass: 6, protocol: 80 }], driver: "usb" }],
      dropped: 0,
      droppedWhy: "",
    });
  });

  it.each([
    ["a bus id that is a path", { busid: "../../../sys" }],
    ["an interface of a device (2-1:1.0)", { busid: "2-1:1.0" }],
    ["a root hub (usb1)", { busid: "usb1" }],
    ["a bus id with a newline", { busid: "2-1\n" }],
    ["bus 0", { busid: "0-1" }],
    ["a long bus id", { busid: `1-1${".1".repeat(40)}` }],
    ["a vendor id of five digits", { vendorId: "09511" }],
    ["a vendor id that is not hex", { vendorId: "zz12" }],
    ["a product id of two digits", { productId: "16" }],
    ["an interface class above a byte", { interfaces: [{ class: 300, subclass: 0, protocol: 0 }] }],
    ["a negative protocol", { interfaces: [{ class: 3, subclass: 1, protocol: -1 }] }],
    ["a fractional device class", { deviceClass: 1.5 }],
    ["a string that is a number", { manufacturer: 7 }],
    ["no interfaces field", { interfaces: undefined }],
  ])("leaves out a device with %s, counting it, and keeps the others", (_what, more) => {
    const list = parseUsbDeviceList({ devices: [dev({ busid: "1-1" }), dev(more)] });
    expect(list.devices.map((d) => d.busid)).toEqual(["1-1"]);
    expect(list.dropped).toBe(1);
    expect(list.droppedWhy).not.toBe("");
  });

  it.each([null, "devices", { devices: "x" }, { devices: { 0: dev() } }, {}])("refuses a list that is not one (%j)", (v) => {
    expect(() => parseUsbDeviceList(v)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("takes garbage entries for what they are: left out", () => {
    const list = parseUsbDeviceList({ devices: [null, 7, "2-1", [], {}, dev()] });
    expect(list.devices).toHaveLength(1);
    expect(list.dropped).toBe(5);
  });

  it("keeps a bus id once: the first entry", () => {
    const list = parseUsbDeviceList({ devices: [dev({ product: "first" }), dev({ product: "second" }), dev({ busid: "2-2" })] });
    expect(list.devices.map((d) => [d.busid, d.product])).toEqual([
      ["2-1", "first"],
      ["2-2", "DataTraveler 3.0"],
    ]);
    expect(list).toMatchObject({ dropped: 1, droppedWhy: "bus id 2-1 listed twice" });
  });

  it(`keeps at most ${MAX_USB_DEVICES} devices`, () => {
    const many = Array.from({ length: MAX_USB_DEVICES + 10 }, (_, i) => dev({ busid: `${Math.floor(i / 100) + 1}-${(i % 100) + 1}` }));
    const list = parseUsbDeviceList({ devices: many });
    expect(list.devices).toHaveLength(MAX_USB_DEVICES);
    expect(list.dropped).toBe(10);
  });

  it(`keeps at most ${MAX_USB_INTERFACES} distinct interfaces, HID and hub ones first, so a keyboard cannot hide behind many others`, () => {
    const filler = Array.from({ length: 100 }, (_, i) => ({ class: 255, subclass: i, protocol: 0 }));
    const keyboard = { class: 3, subclass: 1, protocol: 1 };
    const list = parseUsbDeviceList({ devices: [dev({ interfaces: [...filler, keyboard, keyboard, { class: 8, subclass: 6, protocol: 80 }, { class: 8, subclass: 6, protocol: 80 }] })] });
    const ifs = list.devices[0]!.interfaces;
    expect(ifs).toHaveLength(MAX_USB_INTERFACES);
    expect(ifs[0]).toEqual(keyboard);
    expect(ifs.filter((i) => i.class === 3)).toHaveLength(1);
  });

  it("escapes control and format characters in the device's strings and clips them, never inside an escape", () => {
    const list = parseUsbDeviceList({ devices: [dev({ manufacturer: "\u001b]0;owned\u0007", product: "ok\u202etxt.exe\u0085", serial: "x".repeat(1000) })] });
    const d = list.devices[0]!;
    expect(d.manufacturer).toBe("\\u001b]0;owned\\u0007");
    expect(d.product).toBe("ok\\u202etxt.exe\\u0085");
    expect(d.serial).toBe("x".repeat(MAX_USB_STRING));
    for (const text of [d.manufacturer, d.product, d.serial]) expect(text).not.toMatch(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u);
    const clipped = usbText(`${"a".repeat(MAX_USB_STRING - 3)}\u001b`);
    expect(clipped).toBe("a".repeat(MAX_USB_STRING - 3));
    expect([...usbText("日".repeat(100))]).toHaveLength(MAX_USB_STRING);
    expect(usbText("  padded  ")).toBe("padded");
  });

  it("keeps a driver name only when it is a plain name", () => {
    expect(parseUsbDeviceList({ devices: [dev({ driver: "usbip-host" })] }).devices[0]!.driver).toBe("usbip-host");
    expect(parseUsbDeviceList({ devices: [dev({ driver: "usb\u001b[2J" })] }).devices[0]!.driver).toBe("");
  });
});
