// The widget's connection to the node: an embed session whose token lives only
// in this module's memory (never a cookie, never storage), its requests over
// `POST /api/v1/embed/rpc`, and its live events over a WebSocket that names the
// session as a subprotocol (so the token is in no URL).
import type { DiscussionInfo, EventPage } from '../api';
import type { FilePolicy } from '../files/policy';
import { httpTransport, type FileInfo, type Transport, type UploadInfo } from '../files/upload';
import type { EmbedObject } from './origins';

export interface EmbedSession {
  session_token: string;
  user: string;
  discussion: string;
  origins: string[];
  expires_at: number;
}

/** A failed call: the node's code (`used_token`, `expired_token`, `session_ended`, …) and its text. */
export class EmbedError extends Error {
  readonly status: number;
  readonly code: string;
  /** For a policy refusal: the setting that refused, e.g. `files.max_size_mb`. */
  readonly rule: string | null;
  constructor(status: number, code: string, message: string, rule: string | null = null) {
    super(message);
    this.name = 'EmbedError';
    this.status = status;
    this.code = code;
    this.rule = rule;
  }
}

async function post(path: string, body: unknown, token?: string): Promise<unknown> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response: Response;
  try {
    // No cookie goes along: the embed session is the only credential here.
    response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'omit' });
  } catch (e) {
    throw new EmbedError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  return parse(response);
}

async function parse(response: Response): Promise<unknown> {
  let value: unknown;
  try {
    value = await response.json();
  } catch {
    value = undefined;
  }
  const error = (value as { error?: { code?: unknown; message?: unknown; rule?: unknown } } | undefined)?.error;
  if (!response.ok || error) {
    throw new EmbedError(
      response.status,
      typeof error?.code === 'string' ? error.code : `http_${response.status}`,
      typeof error?.message === 'string' ? error.message : response.statusText,
      typeof error?.rule === 'string' ? error.rule : null,
    );
  }
  return value;
}

/** The origins allowed to frame this application's widget (asked before taking a token by postMessage). */
export async function allowedOrigins(app: string): Promise<string[]> {
  let response: Response;
  try {
    response = await fetch(`/api/v1/embed/apps/${encodeURIComponent(app)}/origins`, { credentials: 'omit' });
  } catch (e) {
    throw new EmbedError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  const value = (await parse(response)) as { origins?: unknown };
  return Array.isArray(value.origins) ? value.origins.filter((o): o is string => typeof o === 'string') : [];
}

/** Exchanges the single-use token for an embed session. */
export async function exchange(token: string, object: EmbedObject): Promise<EmbedSession> {
  return (await post('/api/v1/embed/session', {
    token,
    app: object.app,
    object_type: object.type,
    object_id: object.id,
  })) as EmbedSession;
}

export interface SocketHandlers {
  onEvent(event: { type: string } & Record<string, unknown>): void;
  onOpen(): void;
  /** The session is over (close 4001): `reason` says why. */
  onEnded(reason: string): void;
}

const MAX_BACKOFF_MS = 30_000;

/** The embed session's calls and live events. */
export class EmbedClient {
  private readonly token: string;
  readonly session: Omit<EmbedSession, 'session_token'>;
  private ws: WebSocket | null = null;
  private stopped = false;
  private backoff = 1000;

  constructor(session: EmbedSession) {
    const { session_token, ...rest } = session;
    this.token = session_token;
    this.session = rest;
  }

  async rpc<T>(request: Record<string, unknown>): Promise<T> {
    return (await post('/api/v1/embed/rpc', request, this.token)) as T;
  }

  discussion(): Promise<DiscussionInfo> {
    return this.rpc<{ discussion: DiscussionInfo }>({ method: 'get_discussion', discussion: this.session.discussion }).then(
      (r) => r.discussion,
    );
  }

  async history(before: number | null): Promise<EventPage> {
    const r: Record<string, unknown> = { method: 'history', discussion: this.session.discussion, limit: 50 };
    if (before !== null) r.before = before;
    const page = await this.rpc<EventPage>(r);
    return { events: page.events ?? [], more: !!page.more };
  }

  async sync(seq: number): Promise<EventPage> {
    const page = await this.rpc<EventPage>({ method: 'sync', cursors: [{ discussion: this.session.discussion, seq }] });
    return { events: page.events ?? [], more: !!page.more };
  }

  send(text: string, clientMsgId: string, files: string[] = []): Promise<unknown> {
    const r: Record<string, unknown> = { method: 'send', discussion: this.session.discussion, client_msg_id: clientMsgId, text };
    if (files.length > 0) r.files = files;
    return this.rpc(r);
  }

  async filePolicy(): Promise<FilePolicy> {
    return (await this.rpc<{ policy: FilePolicy }>({ method: 'file_policy' })).policy;
  }

  /** Declares an upload into the session's discussion (the node checks its policy first). */
  createUpload(name: string, size: number, sha256: string): Promise<UploadInfo> {
    return post('/api/v1/uploads', { discussion: this.session.discussion, name, size, sha256 }, this.token) as Promise<UploadInfo>;
  }

  /** The upload's bytes with the embed session (never the cookie). */
  readonly transport: Transport = httpTransport(() => ({ Authorization: `Bearer ${this.token}` }), 'omit');

  cancelUpload(id: string): void {
    void fetch(`/api/v1/uploads/${encodeURIComponent(id)}`, {
      method: 'DELETE',
      credentials: 'omit',
      headers: { Authorization: `Bearer ${this.token}` },
    }).catch(() => {});
  }

  /**
   * A file of the discussion or its preview. The session's token cannot go in a
   * link, so the page fetches the file and hands it over as a Blob.
   */
  async file(file: FileInfo, thumbnail = false): Promise<Blob> {
    let response: Response;
    try {
      response = await fetch(`/api/v1/files/${encodeURIComponent(file.id)}${thumbnail ? '/thumbnail' : ''}`, {
        credentials: 'omit',
        headers: { Authorization: `Bearer ${this.token}` },
      });
    } catch (e) {
      throw new EmbedError(0, 'network', e instanceof Error ? e.message : String(e));
    }
    if (!response.ok) await parse(response);
    return response.blob();
  }

  react(messageId: string, emoji: string, add: boolean): Promise<unknown> {
    return this.rpc({ method: 'react', discussion: this.session.discussion, message_id: messageId, emoji, add });
  }

  markRead(seq: number): Promise<unknown> {
    return this.rpc({ method: 'mark_read', discussion: this.session.discussion, seq });
  }

  typing(on: boolean): Promise<unknown> {
    return this.rpc({ method: 'typing', discussion: this.session.discussion, typing: on });
  }

  connect(handlers: SocketHandlers): void {
    this.stopped = false;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/ws`, ['veche.embed', this.token]);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 1000;
      // Object discussions' live events come to connections that watch them.
      ws.send(JSON.stringify({ id: 1, request: { method: 'watch', discussion: this.session.discussion, watch: true } }));
      handlers.onOpen();
    };
    ws.onmessage = (m) => {
      let value: unknown;
      try {
        value = JSON.parse(String(m.data));
      } catch {
        return;
      }
      if (typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string') {
        handlers.onEvent(value as { type: string } & Record<string, unknown>);
      }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (e.code === 4001) {
        this.stopped = true;
        handlers.onEnded(e.reason);
        return;
      }
      if (this.stopped) return;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      setTimeout(() => {
        if (!this.stopped) this.connect(handlers);
      }, wait);
    };
  }

  stop(): void {
    this.stopped = true;
    this.ws?.close(1000);
    this.ws = null;
  }
}
