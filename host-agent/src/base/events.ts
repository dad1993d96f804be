// The event feed: every state change qvmd makes is published here, in order, with a sequence
// number. The admin API streams it to subscribers (CLI, web shell).
import { isoNow, systemClock, type Clock } from "./clock.js";
export const EVENT_TYPES = [
  "domain-add",
  "domain-delete",
  "domain-pre-start",
  "domain-start",
  "domain-start-failed",
  "domain-paused",
  "domain-unpaused",
  "domain-pre-shutdown",
  "domain-shutdown",
  "property-set",
  "property-reset",
  "feature-set",
  "feature-delete",
  "tag-add",
  "tag-delete",
  "global-property-set",
  "volume-revert",
  "volume-resize",
  "volume-config",
  "qrexec-call",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface QvmEvent {
  seq: number;
  type: EventType;
  /** "" for events about the whole system (global properties). */
  domain: string;
  fields: Record<string, string>;
  time: string;
}

export type EventListener = (ev: QvmEvent) => void;


export class EventBus {
  private seq = 0;
  private readonly listeners = new Set<EventListener>();

  constructor(private readonly clock: Clock = systemClock) {}

  publish(type: EventType, domain: string, fields: Record<string, string> = {}): QvmEvent {
    const ev: QvmEvent = { seq: ++this.seq, type, domain, fields, time: isoNow(this.clock) };
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch {
        // One broken subscriber must not stop the others or the change that published.
      }
    }
    return ev;
  }

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
