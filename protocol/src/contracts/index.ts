// The contracts every qvm component shares, in one place: the error type and its code table, the
// domain-name and service-name rules, the signal lists, the vsock ports, the default
// directories, the words of the admin API's closed sets, the web shell's message schema and the
// declared-domains file of `qvm apply`.
// Free of grpc-js and Node's modules (zod only), so the CLI at start-up, the web page and the
// in-domain tools import it as "@qvm/protocol/contracts" without loading gRPC.
export { QVM_ERROR_CODES, QvmError, isQvmError, isQvmErrorCode, type QvmErrorCode } from "./errors.js";
export { DOMAIN_NAME_PATTERN, MAX_NAME_LENGTH, RESERVED_NAMES, isDomainNameShaped, validateDomainName } from "./names.js";
export {
  ARGUMENT_PATTERN,
  MAX_ARGUMENT_LENGTH,
  MAX_SERVICE_NAME_LENGTH,
  SERVICE_NAME_PATTERN,
  isValidServiceCall,
  isValidServiceName,
  sanitizeArgument,
  splitServiceName,
} from "./services.js";
export { EXEC_SIGNALS, EXIT_SIGNALS, isExecSignal, isExitSignal, type ExecSignal, type ExitSignal } from "./signals.js";
export { AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT, EXEC_DATA_VSOCK_PORT, QREXEC_VSOCK_PORT } from "./ports.js";
export { escapeGuestText, quoteGuestText } from "./guest-text.js";
export { ADMIN_GROUP, ADMIN_SOCKET_NAME, DATA_DIR_ENV, DEFAULT_DATA_DIR, DEFAULT_RUNTIME_DIR, RUNTIME_DIR_ENV } from "./dirs.js";
export {
  DOMAIN_CLASSES,
  EVENT_TYPES,
  POLICY_ACTIONS,
  POWER_STATES,
  UNKNOWN_WORD,
  VMM_KINDS,
  type DomainClassWord,
  type EventTypeWord,
  type PolicyActionWord,
  type PowerStateWord,
  type VmmKindWord,
} from "./words.js";
export {
  DISPLAY_TICKET_PATTERN,
  MAX_SHELL_DOMAINS,
  MAX_SHELL_PASSPHRASE,
  MAX_SHELL_TEXT,
  MAX_SHELL_WINDOWS,
  MAX_WINDOW_PROGRAM,
  clipShellText,
  domainSummarySchema,
  pageMessageSchema,
  serverMessageSchema,
  windowSummarySchema,
  type DomainSummary,
  type PageMessage,
  type ServerMessage,
  type TerminalKind,
  type WindowSummary,
} from "./web-shell.js";
export {
  FIREWALL_LIST_HEADER,
  MAX_FIREWALL_LINE_BYTES,
  MAX_FIREWALL_RULES,
  activeRules,
  formatRuleApi,
  formatRuleSet,
  isIPv4Address,
  isIPv6Address,
  listRows,
  nextExpiry,
  parseRuleApi,
  parseRuleCli,
  parseRuleSet,
  type FirewallAction,
  type FirewallProto,
  type FirewallRule,
} from "./firewall.js";
// The declared-domains file of `qvm apply` (declared.ts): its types here; its schema and helpers
// from "@qvm/protocol/declared". Re-exported here, its zod would load with every CLI command (the
// CLI imports this surface at start-up, and a bundled module that is re-exported is evaluated).
export type { DeclaredDependency, DeclaredDomain, DeclaredFile, DeclaredPropertyDef, DeclaredPropertyName, DeclaredPropertyType } from "./declared.js";
export { MAX_PCI_DEVICES, PCI_ADDRESS_PATTERN, isPciAddress, parsePciAddress, qubesPciName } from "./pci.js";
export {
  MAX_CLIPBOARD_BYTES,
  MAX_WINDOWS_PER_DOMAIN,
  WINDOW_MAX_HEIGHT,
  WINDOW_MAX_WIDTH,
  WINDOW_MIN_HEIGHT,
  WINDOW_MIN_WIDTH,
  WINDOW_VSOCK_PORT_BASE,
  WINDOW_VSOCK_PORT_COUNT,
  isWindowHeight,
  isWindowVsockPort,
  isWindowWidth,
  pasteDeniedMessage,
  windowSizeProblem,
} from "./windows.js";
export {
  MAX_USB_DEVICES,
  MAX_USB_INTERFACES,
  MAX_USB_PLUGS,
  MAX_USB_STRING,
  USB_BUSID_PATTERN,
  USB_PLUG_KINDS,
  USB_SERVICE,
  isUsbBusId,
  parseUsbDeviceName,
  usbDeviceName,
  type UsbPlugKind,
} from "./usb.js";
