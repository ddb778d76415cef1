// The live connection: the node's events over `/api/v1/ws` (the cookie
// authenticates it; the device id goes as the `device` query parameter, which
// is not a secret). Reconnects with backoff, and at once when the browser
// comes back online.
import { ApiError } from '../api';
import { deviceId } from '../device';

export type SocketState = 'connecting' | 'open' | 'closed';

export interface SocketHandlers {
  onEvent(event: { type: string } & Record<string, unknown>): void;
  onState(state: SocketState): void;
  /** The session ended (close 4001): the user is signed out. */
  onSessionEnded(): void;
}

interface Pending {
  resolve(reply: unknown): void;
  reject(error: ApiError): void;
}

const MAX_BACKOFF_MS = 30_000;

export class Socket {
  private ws: WebSocket | null = null;
  private stopped = false;
  private backoff = 1000;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers: SocketHandlers;
  private readonly online = () => this.reconnectNow();

  constructor(handlers: SocketHandlers) {
    this.handlers = handlers;
  }

  start(): void {
    this.stopped = false;
    window.addEventListener('online', this.online);
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener('online', this.online);
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(1000);
    this.ws = null;
    this.failPending();
  }

  /** A request over the socket (for what is tied to this connection: presence subscriptions, activity). */
  request<T>(request: Record<string, unknown>): Promise<T> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ApiError(0, 'network', 'not connected'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject });
      ws.send(JSON.stringify({ id, request }));
    });
  }

  private reconnectNow(): void {
    if (this.stopped || this.ws) return;
    if (this.timer) clearTimeout(this.timer);
    this.backoff = 1000;
    this.connect();
  }

  private failPending(): void {
    for (const p of this.pending.values()) p.reject(new ApiError(0, 'network', 'connection closed'));
    this.pending.clear();
  }

  private connect(): void {
    this.timer = null;
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/ws?device=${encodeURIComponent(deviceId())}`);
    this.ws = ws;
    this.handlers.onState('connecting');
    ws.onopen = () => {
      this.backoff = 1000;
      this.handlers.onState('open');
    };
    ws.onmessage = (m) => {
      let frame: unknown;
      try {
        frame = JSON.parse(String(m.data));
      } catch {
        return;
      }
      if (typeof frame !== 'object' || frame === null) return;
      const f = frame as Record<string, unknown>;
      if (typeof f.id === 'number' && ('reply' in f || 'error' in f)) {
        const p = this.pending.get(f.id);
        this.pending.delete(f.id);
        if (!p) return;
        if (f.error) {
          const e = f.error as { code?: string; message?: string };
          p.reject(new ApiError(200, e.code ?? 'internal', e.message ?? ''));
        } else p.resolve(f.reply);
        return;
      }
      if (typeof f.type === 'string') this.handlers.onEvent(f as { type: string });
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending();
      this.handlers.onState('closed');
      if (this.stopped) return;
      if (e.code === 4001) {
        this.handlers.onSessionEnded();
        return;
      }
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
    };
  }
}
