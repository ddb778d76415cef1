import { IDBFactory } from 'fake-indexeddb';
import { describe, expect, it } from 'vitest';
import { ApiError, type SendRequest } from '../src/api';
import { Outbox, isTransient, newClientMsgId } from '../src/chat/outbox';

/** A node that stores each `client_msg_id` once and answers a resend with the original, as the real one does. */
function node() {
  const stored = new Map<string, { req: SendRequest; seq: number }>();
  const calls: SendRequest[] = [];
  let failure: { error: Error; storeFirst: boolean } | null = null;
  function store(req: SendRequest) {
    let entry = stored.get(req.client_msg_id);
    if (!entry) {
      entry = { req, seq: stored.size + 1 };
      stored.set(req.client_msg_id, entry);
    }
    return entry;
  }
  return {
    stored,
    calls,
    /** The next send fails with `error`, after the node stored the message if `storeFirst`. */
    fail(error: Error, storeFirst: boolean) {
      failure = { error, storeFirst };
    },
    send: async (req: SendRequest) => {
      calls.push(req);
      const f = failure;
      failure = null;
      if (f?.storeFirst) store(req);
      if (f) throw f.error;
      const entry = store(req);
      return { message_id: `m-${entry.seq}`, seq: entry.seq };
    },
  };
}

const network = () => new ApiError(0, 'network', 'Failed to fetch');

describe('outbox', () => {
  it('keeps a message across a reopen (a reload) until it is sent', async () => {
    const idb = new IDBFactory();
    const box = await Outbox.open('veche-outbox-anna@hq', idb);
    const item = await box.add('d1', 'Привет', 'm-7', 100);
    box.close();
    const again = await Outbox.open('veche-outbox-anna@hq', idb);
    expect(await again.list()).toEqual([
      { client_msg_id: item.client_msg_id, discussion: 'd1', text: 'Привет', reply_to: 'm-7', created_at: 100, state: 'pending' },
    ]);
    // Another user's outbox is another database.
    const boris = await Outbox.open('veche-outbox-boris@hq', idb);
    expect(await boris.list()).toEqual([]);
  });

  it('sends oldest first and forgets each message once the node confirms it', async () => {
    const n = node();
    const box = await Outbox.open('o', new IDBFactory());
    await box.add('d1', 'second', undefined, 200);
    await box.add('d1', 'first', undefined, 100);
    const sent: string[] = [];
    await box.flush(n.send, (item, r) => sent.push(`${item.text}:${r.seq}`));
    expect(n.calls.map((c) => c.text)).toEqual(['first', 'second']);
    expect(sent).toEqual(['first:1', 'second:2']);
    expect(await box.list()).toEqual([]);
  });

  it('keeps a message pending when the node cannot be reached, and stops there', async () => {
    const n = node();
    const box = await Outbox.open('o', new IDBFactory());
    await box.add('d1', 'one', undefined, 1);
    await box.add('d1', 'two', undefined, 2);
    n.fail(network(), false);
    await box.flush(n.send);
    expect(n.calls.map((c) => c.text)).toEqual(['one']);
    expect((await box.list()).map((i) => [i.text, i.state])).toEqual([
      ['one', 'pending'],
      ['two', 'pending'],
    ]);
    await box.flush(n.send);
    expect(await box.list()).toEqual([]);
    expect([...n.stored.values()].map((s) => s.req.text)).toEqual(['one', 'two']);
  });

  it('sends exactly once when the answer was lost and the page reloaded: the same client_msg_id', async () => {
    const idb = new IDBFactory();
    const n = node();
    const box = await Outbox.open('o', idb);
    const item = await box.add('d1', 'важное', undefined, 1);
    // The node stores it, but the answer never arrives.
    n.fail(network(), true);
    await box.flush(n.send);
    expect(n.stored.size).toBe(1);
    expect((await box.list())[0].state).toBe('pending');
    box.close();

    const reloaded = await Outbox.open('o', idb);
    await reloaded.flush(n.send);
    expect(n.calls.map((c) => c.client_msg_id)).toEqual([item.client_msg_id, item.client_msg_id]);
    expect(n.stored.size).toBe(1);
    expect(await reloaded.list()).toEqual([]);
  });

  it('never has one message in flight twice, however often flush is called', async () => {
    const box = await Outbox.open('o', new IDBFactory());
    await box.add('d1', 'one', undefined, 1);
    const calls: string[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const send = async (req: SendRequest) => {
      calls.push(req.client_msg_id);
      await gate;
      return { message_id: 'm', seq: 1 };
    };
    const runs = [box.flush(send), box.flush(send), box.flush(send)];
    release();
    await Promise.all(runs);
    expect(calls).toHaveLength(1);
    expect(await box.list()).toEqual([]);
  });

  it('marks a refused message failed with the reason; retry sends it again with the same id', async () => {
    const n = node();
    const box = await Outbox.open('o', new IDBFactory());
    const item = await box.add('d1', 'x'.repeat(10), undefined, 1);
    n.fail(new ApiError(403, 'forbidden', 'not a member'), false);
    await box.flush(n.send);
    expect(await box.list()).toMatchObject([{ state: 'failed', error: 'forbidden: not a member' }]);
    // A failed message is not sent by the next flush by itself.
    await box.flush(n.send);
    expect(n.calls).toHaveLength(1);
    await box.retry(item.client_msg_id);
    expect((await box.list())[0]).not.toHaveProperty('error');
    await box.flush(n.send);
    expect(n.calls.map((c) => c.client_msg_id)).toEqual([item.client_msg_id, item.client_msg_id]);
    expect(await box.list()).toEqual([]);
  });

  it('discards a message on request', async () => {
    const box = await Outbox.open('o', new IDBFactory());
    const item = await box.add('d1', 'oops', undefined, 1);
    await box.remove(item.client_msg_id);
    expect(await box.list()).toEqual([]);
  });

  it('tells transient failures from refusals', () => {
    expect(isTransient(network())).toBe(true);
    expect(isTransient(new ApiError(503, 'unavailable', ''))).toBe(true);
    expect(isTransient(new ApiError(500, 'internal', ''))).toBe(true);
    expect(isTransient(new ApiError(429, 'throttled', ''))).toBe(true);
    expect(isTransient(new ApiError(401, 'unauthenticated', ''))).toBe(true);
    expect(isTransient(new ApiError(400, 'bad_request', 'too long'))).toBe(false);
    expect(isTransient(new ApiError(404, 'not_found', ''))).toBe(false);
    expect(isTransient(new ApiError(409, 'conflict', ''))).toBe(false);
  });

  it('makes ids the node accepts (1–64 characters), all different', () => {
    const ids = new Set(Array.from({ length: 100 }, newClientMsgId));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });
});
