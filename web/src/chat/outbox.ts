// The outbox: every message the user writes is stored in IndexedDB with its
// `client_msg_id` before it is sent, and stays there until the node answers
// `sent`. A reload or a lost connection sends it again later with the same
// `client_msg_id`, which the node deduplicates: exactly once.
import { ApiError, type SendRequest } from '../api';

export type OutboxState = 'pending' | 'failed';

export interface OutboxItem {
  client_msg_id: string;
  discussion: string;
  text: string;
  reply_to?: string;
  /** Ids of uploaded files to attach. */
  files?: string[];
  /** When it was written (orders the sends). */
  created_at: number;
  state: OutboxState;
  /** Why the node refused it (state `failed`): untrusted text, shown as text. */
  error?: string;
}

export type SendFn = (req: SendRequest) => Promise<{ message_id: string; seq: number }>;

const STORE = 'outbox';

/** 32 random hex digits (crypto.randomUUID needs a secure context; a LAN node may be plain HTTP). */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return hex;
}

/**
 * Whether a failed send may succeed later unchanged: the node was not reached
 * or not able (network, 5xx, `unavailable`, `throttled`, a lapsed session).
 * Anything else is the node's refusal of this message.
 */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof ApiError)) return true;
  if (error.status === 0 || error.status >= 500 || error.status === 401) return true;
  return ['network', 'unavailable', 'internal', 'throttled', 'unauthenticated', 'bad_response'].includes(error.code);
}

function refusal(e: unknown): string {
  if (e instanceof ApiError) return e.message ? `${e.code}: ${e.message}` : e.code;
  return e instanceof Error ? e.message : String(e);
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export class Outbox {
  private readonly db: IDBDatabase;
  private readonly inFlight = new Set<string>();
  private flushing: Promise<void> | null = null;
  private again = false;

  private constructor(db: IDBDatabase) {
    this.db = db;
  }

  /** Opens (creating on first use) the outbox database `name`, one per user. */
  static open(name: string, factory: IDBFactory = indexedDB): Promise<Outbox> {
    return new Promise((resolve, reject) => {
      const r = factory.open(name, 1);
      r.onupgradeneeded = () => {
        if (!r.result.objectStoreNames.contains(STORE)) r.result.createObjectStore(STORE, { keyPath: 'client_msg_id' });
      };
      r.onsuccess = () => resolve(new Outbox(r.result));
      r.onerror = () => reject(r.error);
    });
  }

  close(): void {
    this.db.close();
  }

  private store(mode: IDBTransactionMode): IDBObjectStore {
    return this.db.transaction(STORE, mode).objectStore(STORE);
  }

  /** Every item, oldest first. */
  async list(): Promise<OutboxItem[]> {
    const items = await request(this.store('readonly').getAll() as IDBRequest<OutboxItem[]>);
    return items.sort((a, b) => a.created_at - b.created_at || (a.client_msg_id < b.client_msg_id ? -1 : 1));
  }

  async put(item: OutboxItem): Promise<void> {
    await request(this.store('readwrite').put(item));
  }

  async remove(clientMsgId: string): Promise<void> {
    await request(this.store('readwrite').delete(clientMsgId));
  }

  /** Stores a new message (pending) and returns it; nothing is sent yet. */
  async add(discussion: string, text: string, replyTo?: string, now = Date.now(), files: string[] = []): Promise<OutboxItem> {
    const item: OutboxItem = { client_msg_id: newClientMsgId(), discussion, text, created_at: now, state: 'pending' };
    if (replyTo) item.reply_to = replyTo;
    if (files.length > 0) item.files = files;
    await this.put(item);
    return item;
  }

  /** A refused item back to pending (the user pressed retry); the same `client_msg_id`. */
  async retry(clientMsgId: string): Promise<void> {
    const item = await request(this.store('readonly').get(clientMsgId) as IDBRequest<OutboxItem | undefined>);
    if (!item) return;
    delete item.error;
    await this.put({ ...item, state: 'pending' });
  }

  /**
   * Sends every pending item, oldest first, one at a time. An item leaves the
   * outbox only when the node answered `sent`; a transient failure stops the
   * run (the rest waits for the next flush); a refusal marks the item failed.
   * Concurrent calls share one run (and ask for another pass), so an item is
   * never in flight twice from this tab.
   */
  flush(send: SendFn, onSent?: (item: OutboxItem, sent: { message_id: string; seq: number }) => void): Promise<void> {
    if (this.flushing) {
      this.again = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      try {
        do {
          this.again = false;
          await this.pass(send, onSent);
        } while (this.again);
      } finally {
        this.flushing = null;
      }
    })();
    return this.flushing;
  }

  private async pass(send: SendFn, onSent?: (item: OutboxItem, sent: { message_id: string; seq: number }) => void) {
    for (const item of await this.list()) {
      if (item.state !== 'pending' || this.inFlight.has(item.client_msg_id)) continue;
      this.inFlight.add(item.client_msg_id);
      try {
        const req: SendRequest = { discussion: item.discussion, client_msg_id: item.client_msg_id, text: item.text };
        if (item.reply_to) req.reply_to = item.reply_to;
        if (item.files?.length) req.files = item.files;
        const sent = await send(req);
        await this.remove(item.client_msg_id);
        onSent?.(item, sent);
      } catch (e) {
        if (isTransient(e)) return;
        await this.put({ ...item, state: 'failed', error: refusal(e) });
      } finally {
        this.inFlight.delete(item.client_msg_id);
      }
    }
  }
}
