// Public surface of the host agent.
export { DomainVm, type DomainVmOptions, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS } from "./domain/domain-vm.js";
export { AgentClient, type ExecOptions } from "./agent/agent-client.js";
export { serveLocalAgent, type LocalAgent } from "./agent/local-agent.js";
export { ExecProcess, type ExecExit } from "./agent/exec-process.js";
export type { GuestInfo, SignalName } from "./agent/replies.js";
export { QemuDriver, runtimePaths } from "./vmm/qemu/qemu-driver.js";
export { buildQemuArgs, kernelCommandLine } from "./vmm/qemu/qemu-args.js";
export { chooseAccel, hostTscKhz } from "./vmm/accel.js";
export type { VmmDriver, VmHandle, VmSpec, VmExit, VmInfo } from "./vmm/driver.js";
export { dialHybridVsock } from "./vsock/hybrid-dial.js";
export { VsockRelay } from "./vsock/agent-relay.js";
export { validateDomainName, MAX_NAME_LENGTH } from "./model/names.js";
export { LABELS, LABEL_NAMES, type Label } from "./model/labels.js";
export { DOMAIN_CLASSES, domainRecordSchema, type DomainClass, type DomainRecord } from "./model/domain.js";
export { PROPERTIES, GLOBAL_PROPERTIES, resolveProperty, checkPropertySet, checkGlobalSet, type PropValue } from "./model/properties.js";
export { DomainStore, STORE_FILE } from "./store/domain-store.js";
