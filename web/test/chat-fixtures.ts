// Events and messages for the chat tests.
import type { DiscussionEvent, Message } from '../src/api';

export const D = 'd1@hq';

export function msg(seq: number, text: string, extra: Partial<Message> = {}): Message {
  return {
    id: `m${seq}@hq`,
    discussion: D,
    seq,
    author: 'anna@hq',
    text,
    actions: [],
    mentions: [],
    reactions: [],
    created_at: 1765000000000 + seq * 1000,
    version: 1,
    deleted: false,
    ...extra,
  };
}

export function ev(seq: number, change: DiscussionEvent['change'], actor = 'anna@hq', discussion = D): DiscussionEvent {
  return { discussion, seq, at: 1765000000000 + seq * 1000, actor, change };
}

export function posted(seq: number, text: string, extra: Partial<Message> = {}): DiscussionEvent {
  return ev(seq, { type: 'message_posted', message: msg(seq, text, extra) }, extra.author ?? 'anna@hq');
}
