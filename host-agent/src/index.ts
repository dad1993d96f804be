// Public surface of the host agent: qvmd's core and the parts other packages build on (a domain
// VM, the VMM drivers, the guest-agent client, the qrexec router). Test support is the separate
// "@qvm/host-agent/testing" surface.
export { composeQvmd, DEFAULT_ASK_TIMEOUT_MS, type ComposeOptions } from "./core/compose.js";
export { Qvmd, type DomainView, type DaemonInfo, type ExecCommand } from "./core/qvmd.js";
export { ExecSession, ConsoleSession } from "./core/sessions.js";
export { DomainVm, type DomainVmOptions, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS } from "./domain/domain-vm.js";
export type { Attacher, AttachContext, AttachmentHolder } from "./domain/attachments.js";
export type { BootPlan } from "./domain/boot-plan.js";
export type { RunningVm, VmFactory } from "./domain/vm-factory.js";
export { AgentClient, type ExecOptions } from "./agent/agent-client.js";
export { ExecProcess, type ExecExit } from "./agent/exec-process.js";
export type { GuestInfo } from "./agent/replies.js";
export { QemuDriver } from "./vmm/qemu/qemu-driver.js";
export { CloudHypervisorDriver, CH_KIND } from "./vmm/cloud-hypervisor/ch-driver.js";
export { DriverTable } from "./vmm/drivers.js";
export type { VmmDriver, VmHandle, VmSpec, VmExit, VmInfo, VmCapabilities, NicSpec, DeviceSpec, ChannelSpec } from "./vmm/driver.js";
export { dialHybridVsock } from "./vsock/hybrid-dial.js";
export { VsockRelay } from "./vsock/agent-relay.js";
export { validateDomainName, MAX_NAME_LENGTH } from "./model/names.js";
export { DOMAIN_CLASSES, domainRecordSchema, type DomainClass, type DomainRecord } from "./model/domain.js";
export { PROPERTIES, GLOBAL_PROPERTIES, resolveProperty, checkPropertySet, checkGlobalSet, type PropValue } from "./model/properties.js";
export { DomainStore, STORE_FILE } from "./store/domain-store.js";
export { EventBus, EVENT_TYPES, type QvmEvent, type EventType } from "./base/events.js";
export { KeyedMutex } from "./base/keyed-mutex.js";
export { DisposableStore, toDisposable, type Disposable } from "./base/disposables.js";
export { QrexecRouter, DEFAULT_ROUTER_LIMITS, type QrexecHost, type ServiceProcess, type OpenedService, type AskQuestionInput, type RouterLimits } from "./qrexec/router.js";
export { parsePolicy } from "./qrexec/policy/parser.js";
export type { SystemFacts, DomainFacts } from "./qrexec/policy/evaluate.js";
export { VolumeStore } from "./storage/volumes.js";
export { VolumeKey } from "./storage/volume-key.js";
