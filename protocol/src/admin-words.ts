// The one table between the admin API's enums (admin.proto: DomainClass, PowerState,
// PolicyAction, EventType) and the words people read (contracts/words.ts): qvmd turns its words
// into enums when it answers, clients turn enums back into words before they print or draw them,
// so `qvm ls --json` says "AppVM" and "Running", never a number. Needs the generated enums, so it
// is not part of the grpc-free contracts; the web page gets words from its server.
import { DomainClass, EventType, PolicyAction, PowerState, type Domain } from "./gen/qvm/admin/v1/admin.js";
import { UNKNOWN_WORD, type DomainClassWord, type EventTypeWord, type PolicyActionWord, type PowerStateWord } from "./contracts/index.js";

/** Both directions of one enum's table, keyed by word so that every word has its value. */
function wordTable<E extends number, W extends string>(values: Readonly<Record<W, E>>, unspecified: E) {
  const byWord = new Map<string, E>(Object.entries<E>(values));
  const byValue = new Map<number, W>([...byWord].map(([w, v]) => [v, w as W]));
  return {
    /** The word for `value`; UNKNOWN_WORD for UNSPECIFIED or a value this build does not know. */
    word: (value: E): W | typeof UNKNOWN_WORD => byValue.get(value) ?? UNKNOWN_WORD,
    /** The value for `word`; UNSPECIFIED for a word that is not in the table. */
    fromWord: (word: string): E => byWord.get(word) ?? unspecified,
  };
}

const classes = wordTable<DomainClass, DomainClassWord>(
  {
    AppVM: DomainClass.DOMAIN_CLASS_APP_VM,
    TemplateVM: DomainClass.DOMAIN_CLASS_TEMPLATE_VM,
    StandaloneVM: DomainClass.DOMAIN_CLASS_STANDALONE_VM,
    DispVM: DomainClass.DOMAIN_CLASS_DISP_VM,
  },
  DomainClass.DOMAIN_CLASS_UNSPECIFIED,
);
export const domainClassWord = classes.word;
export const domainClassFromWord = classes.fromWord;

const states = wordTable<PowerState, PowerStateWord>(
  {
    Halted: PowerState.POWER_STATE_HALTED,
    Transient: PowerState.POWER_STATE_TRANSIENT,
    Running: PowerState.POWER_STATE_RUNNING,
    Paused: PowerState.POWER_STATE_PAUSED,
    Halting: PowerState.POWER_STATE_HALTING,
  },
  PowerState.POWER_STATE_UNSPECIFIED,
);
export const powerStateWord = states.word;
export const powerStateFromWord = states.fromWord;

const actions = wordTable<PolicyAction, PolicyActionWord>(
  { allow: PolicyAction.POLICY_ACTION_ALLOW, deny: PolicyAction.POLICY_ACTION_DENY, ask: PolicyAction.POLICY_ACTION_ASK },
  PolicyAction.POLICY_ACTION_UNSPECIFIED,
);
export const policyActionWord = actions.word;
export const policyActionFromWord = actions.fromWord;

const events = wordTable<EventType, EventTypeWord>(
  {
    "domain-add": EventType.EVENT_TYPE_DOMAIN_ADD,
    "domain-delete": EventType.EVENT_TYPE_DOMAIN_DELETE,
    "domain-pre-start": EventType.EVENT_TYPE_DOMAIN_PRE_START,
    "domain-start": EventType.EVENT_TYPE_DOMAIN_START,
    "domain-start-failed": EventType.EVENT_TYPE_DOMAIN_START_FAILED,
    "domain-paused": EventType.EVENT_TYPE_DOMAIN_PAUSED,
    "domain-unpaused": EventType.EVENT_TYPE_DOMAIN_UNPAUSED,
    "domain-pre-shutdown": EventType.EVENT_TYPE_DOMAIN_PRE_SHUTDOWN,
    "domain-shutdown": EventType.EVENT_TYPE_DOMAIN_SHUTDOWN,
    "property-set": EventType.EVENT_TYPE_PROPERTY_SET,
    "property-reset": EventType.EVENT_TYPE_PROPERTY_RESET,
    "feature-set": EventType.EVENT_TYPE_FEATURE_SET,
    "feature-delete": EventType.EVENT_TYPE_FEATURE_DELETE,
    "tag-add": EventType.EVENT_TYPE_TAG_ADD,
    "tag-delete": EventType.EVENT_TYPE_TAG_DELETE,
    "global-property-set": EventType.EVENT_TYPE_GLOBAL_PROPERTY_SET,
    "volume-revert": EventType.EVENT_TYPE_VOLUME_REVERT,
    "volume-resize": EventType.EVENT_TYPE_VOLUME_RESIZE,
    "volume-config": EventType.EVENT_TYPE_VOLUME_CONFIG,
    "qrexec-call": EventType.EVENT_TYPE_QREXEC_CALL,
    "firewall-changed": EventType.EVENT_TYPE_FIREWALL_CHANGED,
    "device-assign": EventType.EVENT_TYPE_DEVICE_ASSIGN,
    "device-unassign": EventType.EVENT_TYPE_DEVICE_UNASSIGN,
    "window-open": EventType.EVENT_TYPE_WINDOW_OPEN,
    "window-close": EventType.EVENT_TYPE_WINDOW_CLOSE,
    clipboard: EventType.EVENT_TYPE_CLIPBOARD,
    "device-added": EventType.EVENT_TYPE_DEVICE_ADDED,
    "device-removed": EventType.EVENT_TYPE_DEVICE_REMOVED,
    "device-attach": EventType.EVENT_TYPE_DEVICE_ATTACH,
    "device-detach": EventType.EVENT_TYPE_DEVICE_DETACH,
  },
  EventType.EVENT_TYPE_UNSPECIFIED,
);
export const eventTypeWord = events.word;
export const eventTypeFromWord = events.fromWord;

/** A Domain as people read it, class and state in words: what `qvm ls --json` prints. */
export type DomainInWords = Omit<Domain, "class" | "state"> & {
  class: ReturnType<typeof domainClassWord>;
  state: ReturnType<typeof powerStateWord>;
};

export function domainInWords(d: Domain): DomainInWords {
  return { ...d, class: domainClassWord(d.class), state: powerStateWord(d.state) };
}
