// New messages told to screen readers through a polite live region: author
// and text, gathered over a short window so a busy discussion does not flood
// the reader (more than a few at once become "N new messages in X" and the
// newest one).
import { t, tn } from '../i18n';

export interface Arrival {
  author: string;
  text: string;
  files: number;
}

/** At most this many messages are read out one by one; more are summed up. */
export const ONE_BY_ONE = 3;
const MAX_TEXT = 200;

function one(a: Arrival): string {
  const text = a.text.trim().replace(/\s+/g, ' ');
  const cut = text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
  const files = a.files > 0 ? tn('announce.files', a.files) : '';
  return t('announce.message', { name: a.author, text: [cut, files].filter(Boolean).join(' · ') });
}

/** What to say for the messages that arrived in one window of `discussion`. */
export function announcementText(arrivals: Arrival[], discussion: string): string {
  if (arrivals.length === 0) return '';
  if (arrivals.length <= ONE_BY_ONE) return arrivals.map(one).join('\n');
  return `${tn('announce.many', arrivals.length, { discussion })}. ${one(arrivals[arrivals.length - 1])}`;
}

export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: Timers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/**
 * Gathers arrivals and says them at most once per window: the first arrival
 * starts the window, its end says everything that came in it.
 */
export class Announcer {
  private queue: Arrival[] = [];
  private discussion = '';
  private timer: unknown = null;

  constructor(
    private readonly say: (text: string) => void,
    private readonly windowMs = 1000,
    private readonly timers: Timers = realTimers,
  ) {}

  push(discussion: string, arrival: Arrival): void {
    // Another discussion was opened: what was gathered for the old one is stale.
    if (discussion !== this.discussion) this.queue = [];
    this.discussion = discussion;
    this.queue.push(arrival);
    if (this.timer === null) this.timer = this.timers.set(() => this.flush(), this.windowMs);
  }

  private flush(): void {
    this.timer = null;
    const text = announcementText(this.queue, this.discussion);
    this.queue = [];
    if (text) this.say(text);
  }

  stop(): void {
    if (this.timer !== null) this.timers.clear(this.timer);
    this.timer = null;
    this.queue = [];
  }
}
