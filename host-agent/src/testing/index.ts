// Test support of the host agent ("@qvm/host-agent/testing"): a real qvmd process on temporary
// directories, an in-process guest agent, and the QEMU internals the benchmarks time against a
// bare QEMU. Not part of the public surface; nothing outside tests and benchmarks imports it.
export { startTestDaemon, testDaemonDirs, removeTestDaemonDirs, qvmdBundle, type TestDaemon, type TestDaemonDirs, type TestDaemonOptions } from "./test-daemon.js";
export { serveLocalAgent, type LocalAgent } from "../agent/local-agent.js";
export { ExecDataListener } from "../agent/data-channel.js";
export { runtimePaths } from "../vmm/qemu/qemu-driver.js";
export { buildQemuArgs, kernelCommandLine } from "../vmm/qemu/qemu-args.js";
export { chooseAccel, hostTscKhz } from "../vmm/accel.js";
export { collectStream } from "./streams.js";
