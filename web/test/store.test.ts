// The chat store against a fake socket and a fake node: live events in order,
// a gap that makes it sync, the outbox sending after the connection returns,
// typing and preferences.
import 'fake-indexeddb/auto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DiscussionEvent, DiscussionInfo, UserInfo } from '../src/api';
import { ApiError } from '../src/api';
import { openTimeline, outboxItems, prefs, sendMessage, startChat, stopChat, timelines, typingIn, watchDiscussion } from '../src/chat/store';
import { apiError, json, mockFetch, rpcMethod, type Call } from './fetch-mock';
import { D, ev, posted } from './chat-fixtures';

class FakeSocket {
  static OPEN = 1;
  static last: FakeSocket | null = null;
  readyState = 0;
  url: string;
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  constructor(url: string) {
    this.url = url;
    FakeSocket.last = this;
  }
  send(data: string) {
    this.sent.push(data);
  }
  close() {}
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  event(e: unknown) {
    this.onmessage?.({ data: JSON.stringify(e) });
  }
}

const anna: UserInfo = { id: 'anna@hq', login: 'anna', display_name: 'Anna', email: '', department: '', admin: false, locked: false, created_at: 0 };
const info: DiscussionInfo = {
  id: D,
  kind: 'dialog',
  title: '',
  object: null,
  members: [
    { user: 'anna@hq', role: 'member' },
    { user: 'boris@hq', role: 'member' },
  ],
  last_seq: 3,
  last_activity_at: 1,
  read_seq: 3,
  unread: 0,
  mentions: 0,
  following: true,
};

/** The node's events of D, from seq 1. */
let events: DiscussionEvent[];
let offline: boolean;
let calls: Call[];
let list: DiscussionInfo[] | null;
const sentIds = new Set<string>();

function route(call: Call) {
  if (offline) return new TypeError('Failed to fetch');
  const body = call.body as Record<string, any>;
  switch (rpcMethod(call)) {
    case 'get_preferences':
      return json(200, { kind: 'preferences', preferences: { send_key: 'ctrl_enter', other: 1 } });
    case 'history':
      return json(200, { kind: 'events', events: events.slice(-50), more: false });
    case 'sync': {
      const after = body.cursors[0].seq;
      return json(200, { kind: 'events', events: events.filter((e) => e.seq > after), more: false });
    }
    case 'get_discussion':
      return json(200, { kind: 'discussion', discussion: { ...info, last_seq: events.length } });
    case 'get_presence':
      return json(200, { kind: 'presence', users: [] });
    case 'send':
      if (!sentIds.has(body.client_msg_id)) {
        sentIds.add(body.client_msg_id);
        events.push(posted(events.length + 1, body.text));
      }
      return json(200, { kind: 'sent', message_id: `m${events.length}@hq`, seq: events.length });
  }
  return apiError(404, 'not_found', 'no route');
}

function syncCalls() {
  return calls.filter((c) => rpcMethod(c) === 'sync').map((c) => (c.body as any).cursors);
}

beforeEach(async () => {
  events = [posted(1, 'one'), posted(2, 'two'), posted(3, 'three')];
  offline = false;
  sentIds.clear();
  list = [info];
  vi.stubGlobal('WebSocket', FakeSocket);
  calls = mockFetch(route);
  await startChat(
    {
      me: () => anna,
      discussions: () => list,
      setDiscussions: (l) => (list = l),
      reloadDiscussions: async () => {},
      signedOut: () => {},
      errorText: (e) => (e instanceof ApiError ? e.code : String(e)),
    },
    anna,
  );
  FakeSocket.last!.open();
});

afterEach(() => {
  stopChat();
  vi.unstubAllGlobals();
});

describe('chat store', () => {
  it('connects with the device id and no token in the URL', () => {
    expect(FakeSocket.last!.url).toMatch(/\/api\/v1\/ws\?device=web-[0-9a-f]{16}$/);
  });

  it('loads the newest page, then applies live events in order without asking again', async () => {
    await openTimeline(D);
    await vi.waitFor(() => expect(timelines.value[D]?.cursor).toBe(3));
    await vi.waitFor(() => expect(syncCalls()).toHaveLength(1));
    events.push(posted(4, 'four'));
    FakeSocket.last!.event({ type: 'discussion', event: events[3] });
    expect(timelines.value[D].messages.map((m) => m.text)).toEqual(['one', 'two', 'three', 'four']);
    expect(syncCalls()).toHaveLength(1);
  });

  it('a gap in seq makes it sync from the last applied seq instead of skipping', async () => {
    await openTimeline(D);
    await vi.waitFor(() => expect(syncCalls()).toHaveLength(1));
    events.push(posted(4, 'four'), ev(5, { type: 'message_edited', message_id: 'm1@hq', text: 'uno', version: 2 }));
    // Event 4 was lost on the way; 5 arrives.
    FakeSocket.last!.event({ type: 'discussion', event: events[4] });
    await vi.waitFor(() => expect(timelines.value[D].cursor).toBe(5));
    expect(syncCalls()[1]).toEqual([{ discussion: D, seq: 3 }]);
    expect(timelines.value[D].messages.map((m) => m.text)).toEqual(['uno', 'two', 'three', 'four']);
  });

  it('keeps a message written offline and sends it once when back online', async () => {
    await openTimeline(D);
    offline = true;
    await sendMessage(D, 'без сети');
    await vi.waitFor(() => expect(calls.some((c) => rpcMethod(c) === 'send')).toBe(true));
    await vi.waitFor(() => expect(outboxItems.value.map((o) => [o.text, o.state])).toEqual([['без сети', 'pending']]));
    offline = false;
    window.dispatchEvent(new Event('online'));
    await vi.waitFor(() => expect(outboxItems.value).toEqual([]));
    const sends = calls.filter((c) => rpcMethod(c) === 'send').map((c) => (c.body as any).client_msg_id);
    expect(new Set(sends).size).toBe(1);
    expect(events.filter((e) => (e.change as any).message?.text === 'без сети')).toHaveLength(1);
    // The confirmed message reaches the timeline (here by sync: no live event came).
    await vi.waitFor(() => expect(timelines.value[D].messages.at(-1)?.text).toBe('без сети'));
  });

  it('shows who types until they stop', () => {
    FakeSocket.last!.event({ type: 'typing', discussion: D, user: 'boris@hq', typing: true, expires_in_ms: 6000 });
    expect(typingIn(D)).toEqual(['boris@hq']);
    FakeSocket.last!.event({ type: 'typing', discussion: D, user: 'boris@hq', typing: false, expires_in_ms: 0 });
    expect(typingIn(D)).toEqual([]);
  });

  it('watches an open object discussion on the socket, and again after a reconnect', async () => {
    const first = FakeSocket.last!;
    watchDiscussion('o1@hq', true);
    expect(first.sent.map((m) => JSON.parse(m).request)).toContainEqual({ method: 'watch', discussion: 'o1@hq', watch: true });
    first.readyState = 3;
    first.onclose?.({ code: 1006 });
    await vi.waitFor(() => expect(FakeSocket.last).not.toBe(first), { timeout: 3000 });
    FakeSocket.last!.open();
    await vi.waitFor(() =>
      expect(FakeSocket.last!.sent.map((m) => JSON.parse(m).request)).toContainEqual({ method: 'watch', discussion: 'o1@hq', watch: true }),
    );
  });

  it('takes the send key from the preferences stored on the node', async () => {
    await vi.waitFor(() => expect(prefs.value.send_key).toBe('ctrl_enter'));
  });
});
