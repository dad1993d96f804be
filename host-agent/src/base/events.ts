// The event feed: every state change qvmd makes is published here, in order, with a sequence
// number. The admin API streams it to subscribers (CLI, web shell).
import { EVENT_TYPES, type EventTypeWord } from "@qvm/protocol/contracts";
import { isoNow, systemClock, type Clock } from "./clock.js";
// The event names are the admin API's EventType words, a contract defined once for qvmd and its
// clients (@qvm/protocol/contracts).
export { EVENT_TYPES };
export type EventType = EventTypeWord;

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
