// The event reducer: one discussion's loaded messages, changed only by its
// events, applied strictly in `seq` order. Pure functions, no IO: the caller
// fetches (history, sync) and feeds the answers in.
import type { DiscussionEvent, EventPage, Message } from '../api';

export interface Timeline {
  discussion: string;
  /** Loaded messages (tombstones included), ascending by `seq`. */
  messages: Message[];
  /** The last `seq` applied: live events at or below it are old news. */
  cursor: number;
  /** The lowest `seq` loaded from history: the next older page is `before` it. */
  oldest: number | null;
  /** Older events exist on the node. */
  more: boolean;
  /** The first page arrived. */
  loaded: boolean;
}

export function emptyTimeline(discussion: string): Timeline {
  return { discussion, messages: [], cursor: 0, oldest: null, more: true, loaded: false };
}

/** Inserts or replaces a message, keeping the list ordered by `seq`. */
function upsert(messages: Message[], message: Message): Message[] {
  const at = messages.findIndex((m) => m.id === message.id);
  if (at >= 0) {
    const next = messages.slice();
    next[at] = message;
    return next;
  }
  let i = messages.length;
  while (i > 0 && messages[i - 1].seq > message.seq) i -= 1;
  return [...messages.slice(0, i), message, ...messages.slice(i)];
}

function update(messages: Message[], id: string, change: (m: Message) => Message): Message[] {
  const at = messages.findIndex((m) => m.id === id);
  if (at < 0) return messages;
  const next = messages.slice();
  next[at] = change(messages[at]);
  return next;
}

/** What one event does to the loaded messages (the caller checked its `seq`). */
export function applyChange(messages: Message[], event: DiscussionEvent): Message[] {
  const c = event.change as { type: string } & Record<string, unknown>;
  switch (c.type) {
    case 'message_posted':
      return upsert(messages, c.message as Message);
    case 'message_edited':
      return update(messages, c.message_id as string, (m) =>
        m.deleted
          ? m
          : {
              ...m,
              text: typeof c.text === 'string' ? c.text : m.text,
              version: Math.max(m.version, Number(c.version) || m.version + 1),
              edited_at: event.at,
            },
      );
    case 'message_deleted':
      return update(messages, c.message_id as string, (m) => ({
        ...m,
        deleted: true,
        text: undefined,
        data: undefined,
        actions: [],
        reactions: [],
        reply_to: m.reply_to,
      }));
    case 'reaction_added':
      return update(messages, c.message_id as string, (m) => {
        const emoji = c.emoji as string;
        const existing = m.reactions.find((r) => r.emoji === emoji);
        if (existing?.users.includes(event.actor)) return m;
        const reactions = existing
          ? m.reactions.map((r) => (r.emoji === emoji ? { ...r, users: [...r.users, event.actor] } : r))
          : [...m.reactions, { emoji, users: [event.actor] }];
        return { ...m, reactions };
      });
    case 'reaction_removed':
      return update(messages, c.message_id as string, (m) => ({
        ...m,
        reactions: m.reactions
          .map((r) => (r.emoji === c.emoji ? { ...r, users: r.users.filter((u) => u !== event.actor) } : r))
          .filter((r) => r.users.length > 0),
      }));
    default:
      // Title, members, created, and changes this client does not know: not about messages.
      return messages;
  }
}

export interface Applied {
  timeline: Timeline;
  /** An event skipped ahead of the cursor: the caller must `sync` from `timeline.cursor`. */
  gap: boolean;
}

/**
 * Applies events of this discussion in order. Events at or below the cursor are
 * ignored; the first one beyond `cursor + 1` stops the run and reports a gap
 * (nothing after it is applied, so nothing is skipped silently).
 */
export function applyEvents(timeline: Timeline, events: DiscussionEvent[]): Applied {
  let { messages, cursor } = timeline;
  let gap = false;
  const sorted = events.filter((e) => e.discussion === timeline.discussion).sort((a, b) => a.seq - b.seq);
  for (const event of sorted) {
    if (event.seq <= cursor) continue;
    if (event.seq > cursor + 1) {
      gap = true;
      break;
    }
    messages = applyChange(messages, event);
    cursor = event.seq;
  }
  if (messages === timeline.messages && cursor === timeline.cursor) return { timeline, gap };
  return { timeline: { ...timeline, messages, cursor }, gap };
}

/**
 * Merges a `history` page (events before `oldest`, newest last). Its
 * `message_posted` events carry each message in its current state, so the
 * other events of the page (edits, reactions of those messages) are already
 * in them; messages already loaded (kept up to date by live events) win.
 * The first page also sets the cursor to the newest event it holds.
 */
export function applyHistory(timeline: Timeline, page: EventPage): Timeline {
  const events = page.events.filter((e) => e.discussion === timeline.discussion);
  const known = new Set(timeline.messages.map((m) => m.id));
  let messages = timeline.messages;
  let oldest = timeline.oldest;
  let cursor = timeline.cursor;
  for (const event of events) {
    oldest = oldest === null ? event.seq : Math.min(oldest, event.seq);
    if (!timeline.loaded) cursor = Math.max(cursor, event.seq);
    if (event.change.type !== 'message_posted') continue;
    const message = (event.change as { message: Message }).message;
    if (!known.has(message.id)) messages = upsert(messages, message);
  }
  return { ...timeline, messages, oldest, cursor, more: page.more, loaded: true };
}
