// Test support, exported as @qvm/gui-proxy/testing for the browser tests in tests/e2e: the shell
// server with a window backend of the test's choosing (an in-memory list whose windows are RFB
// servers on Unix sockets, standing in for domains). Not used by the shell itself.
export { startShellServer, type ShellServer, type ShellServerOptions } from "./server.js";
export { memoryClipboard, type ClipboardBackend, type MemoryClipboard } from "./clipboard.js";
export { staticWindows, unixSocketDialer, type StaticWindows, type WindowBackend, type WindowDialer } from "./windows.js";
