// The qrexec channel alone (framing and the request message), importable as
// "@qvm/protocol/qrexec" by the in-domain tools without pulling in gRPC.
export * as qrexecV1 from "./gen/qvm/qrexec/v1/qrexec.js";
export * from "./qrexec-wire.js";
