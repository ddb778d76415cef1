// What the message view shows, computed from the timeline: rows with day
// separators, and message text split into plain runs and mentions (rendered as
// text nodes, never as HTML).
import type { Message } from '../api';
import { dayKey } from '../i18n';

export type Row = { kind: 'day'; key: string; at: number } | { kind: 'message'; key: string; message: Message };

/** Messages in order, with a day separator before the first message of each local day. */
export function buildRows(messages: Message[]): Row[] {
  const rows: Row[] = [];
  let day = '';
  for (const message of messages) {
    const d = dayKey(message.created_at);
    if (d !== day) {
      rows.push({ kind: 'day', key: `day-${d}`, at: message.created_at });
      day = d;
    }
    rows.push({ kind: 'message', key: message.id, message });
  }
  return rows;
}

export interface Segment {
  text: string;
  /** Set for a recognised mention: `me` when it names the viewer. */
  mention?: 'me' | 'other';
}

const MENTION_RE = /@([a-z0-9][a-z0-9._-]*(?:@[a-z0-9][a-z0-9.-]*)?)/g;

/**
 * Splits text on the `@login` mentions the node recognised (`mentions` holds
 * user ids); other `@words` stay plain text.
 */
export function textSegments(text: string, mentions: string[], myId: string | undefined): Segment[] {
  const myNode = myId?.split('@')[1] ?? '';
  const byName = new Map<string, string>();
  for (const id of mentions) {
    byName.set(id, id);
    const [login, node] = id.split('@');
    if (node === myNode || !myId) byName.set(login, id);
  }
  const out: Segment[] = [];
  let last = 0;
  for (const m of text.matchAll(MENTION_RE)) {
    let name = m[1].replace(/[.-]+$/, '');
    const id = byName.get(name) ?? byName.get(name.split('@')[0]);
    if (!id) continue;
    if (!byName.has(name)) name = name.split('@')[0];
    const start = m.index ?? 0;
    const end = start + 1 + name.length;
    if (start > last) out.push({ text: text.slice(last, start) });
    out.push({ text: text.slice(start, end), mention: id === myId ? 'me' : 'other' });
    last = end;
  }
  if (last < text.length) out.push({ text: text.slice(last) });
  return out;
}

/** The login part of a user id, for display. */
export function loginOf(user: string): string {
  return user.split('@')[0] || user;
}

/**
 * Where to move the read marker: nowhere while the page is hidden or nothing
 * is on screen; to the newest event when the newest message is on screen (it
 * covers the edits and reactions after it); otherwise to the newest message on
 * screen. The caller sends it only if it is beyond the node's marker.
 */
export function readTarget(visibleSeqs: Iterable<number>, messages: Message[], cursor: number, pageVisible: boolean): number | null {
  if (!pageVisible) return null;
  let top = -1;
  for (const seq of visibleSeqs) top = Math.max(top, seq);
  if (top < 0) return null;
  const last = messages[messages.length - 1];
  return last && top >= last.seq ? Math.max(cursor, top) : top;
}
