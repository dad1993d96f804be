// `ask` decisions go to a prompt a person answers: `qvm policy ask` in a terminal now, the web
// shell later. The most recently registered prompt gets the questions; with no prompt, or no
// answer in time, the call is denied. An answer is accepted only for a question that prompt was
// sent, and only once.
import type { AskQuestionInput } from "./router.js";

export interface Prompt {
  /** Delivers a question; the prompt answers through AskBroker.answer. */
  send(q: AskQuestionInput & { id: number; timeoutSeconds: number }): void;
}

interface Pending {
  prompt: Prompt;
  resolve: (target: string | null) => void;
  timer: NodeJS.Timeout;
}

export class AskBroker {
  private readonly prompts: Prompt[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(private readonly timeoutMs: number) {}

  register(p: Prompt): () => void {
    this.prompts.push(p);
    return () => {
      const i = this.prompts.indexOf(p);
      if (i >= 0) this.prompts.splice(i, 1);
      // Questions that prompt held are denied now rather than left to time out.
      for (const [id, w] of this.pending) if (w.prompt === p) this.settle(id, null);
    };
  }

  get registered(): number {
    return this.prompts.length;
  }

  /** The chosen target, or null when refused, unanswered in time, or nobody is there to ask. */
  ask(q: AskQuestionInput): Promise<string | null> {
    const prompt = this.prompts.at(-1);
    if (!prompt) return Promise.resolve(null);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(id, null), this.timeoutMs);
      this.pending.set(id, { prompt, resolve, timer });
      prompt.send({ ...q, id, timeoutSeconds: Math.ceil(this.timeoutMs / 1000) });
    });
  }

  /** A prompt's answer; "" refuses. Answers to unknown, expired or someone else's questions are ignored. */
  answer(from: Prompt, id: number, target: string): void {
    const w = this.pending.get(id);
    if (!w || w.prompt !== from) return;
    this.settle(id, target || null);
  }

  private settle(id: number, target: string | null): void {
    const w = this.pending.get(id);
    if (!w) return;
    this.pending.delete(id);
    clearTimeout(w.timer);
    w.resolve(target);
  }
}
