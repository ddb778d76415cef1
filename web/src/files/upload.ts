// Resumable uploads over the HTTP gateway: `POST /api/v1/uploads` declares the
// file (the node checks its policy first), then `PUT /api/v1/uploads/{id}?offset=N`
// sends 4 MiB at a time; a body that ends early is answered 202 with the bytes
// the node holds (`confirmed`). After a cut connection the client asks
// `GET /api/v1/uploads/{id}` and goes on from `confirmed`, never from its own count.
import { ApiError, errorFromBody } from '../api';
import { deviceId } from '../device';

export interface FileInfo {
  id: string;
  name: string;
  size: number;
  mime: string;
  sha256: string;
  thumbnail: boolean;
  dimensions?: [number, number];
  discussion: string;
  uploader: string;
  created_at: number;
}

export interface UploadInfo {
  id: string;
  size: number;
  confirmed: number;
  expires_at: number;
  file?: FileInfo;
}

export type PutResult = { done: true; file: FileInfo } | { done: false; upload: UploadInfo };

/** The three calls an upload needs (the XHR one below; fakes in tests). */
export interface Transport {
  put(id: string, offset: number, body: Blob, onProgress: (sent: number) => void): Promise<PutResult>;
  status(id: string): Promise<UploadInfo>;
}

export const CHUNK = 4 << 20;

/** Whether an upload failure may go away by itself (a cut connection, a busy node). */
export function retryable(e: unknown): boolean {
  if (!(e instanceof ApiError)) return true;
  if (e.status === 0 || e.status >= 500) return true;
  // 409: our offset was not the node's (a PUT that landed after all): ask where it is.
  return ['network', 'unavailable', 'internal', 'throttled', 'conflict'].includes(e.code);
}

export interface RunOptions {
  chunk?: number;
  /** Bytes the node has, or has plus those in flight (for the progress bar). */
  onProgress?(bytes: number): void;
  /** Waits before attempt `n` (1, 2, …) after a failure; rejects to give up. */
  waitRetry?(attempt: number): Promise<void>;
  /** Checked between steps: stops the upload. */
  cancelled?(): boolean;
}

/**
 * Sends `blob` for `upload` from the node's `confirmed` offset to the end and
 * returns the stored file. A retryable failure waits, asks the node how far it
 * came, and continues from there; anything else is thrown.
 */
export async function runUpload(blob: Blob, upload: UploadInfo, t: Transport, options: RunOptions = {}): Promise<FileInfo> {
  const chunk = options.chunk ?? CHUNK;
  const wait = options.waitRetry ?? (() => Promise.resolve());
  let offset = upload.confirmed;
  let failures = 0;
  if (upload.file) return upload.file;
  for (;;) {
    if (options.cancelled?.()) throw new ApiError(0, 'cancelled', 'cancelled');
    options.onProgress?.(offset);
    try {
      if (failures > 0) {
        const status = await t.status(upload.id);
        if (status.file) return status.file;
        offset = status.confirmed;
        options.onProgress?.(offset);
      }
      const end = Math.min(blob.size, offset + chunk);
      const at = offset;
      const r = await t.put(upload.id, at, blob.slice(at, end), (sent) => options.onProgress?.(at + sent));
      if (r.done) return r.file;
      if (r.upload.file) return r.upload.file;
      if (r.upload.confirmed <= offset && end > offset) throw new ApiError(0, 'network', 'no progress');
      offset = r.upload.confirmed;
      failures = 0;
    } catch (e) {
      if (!retryable(e)) throw e;
      failures += 1;
      await wait(failures);
    }
  }
}

function parse(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The browser's transport: XHR for upload progress. `auth` gives the headers
 * that name the caller: the client's `Veche-Device` (with its same-origin
 * cookie), or the widget's `Authorization` (its embed session, no cookie).
 */
export function httpTransport(auth: () => Record<string, string>, credentials: RequestCredentials = 'same-origin'): Transport {
  return {
    put(id, offset, body, onProgress) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open('PUT', `/api/v1/uploads/${encodeURIComponent(id)}?offset=${offset}`);
        for (const [name, value] of Object.entries(auth())) xhr.setRequestHeader(name, value);
        xhr.setRequestHeader('Accept', 'application/json');
        xhr.setRequestHeader('Content-Type', 'application/octet-stream');
        xhr.upload.onprogress = (e) => onProgress(e.loaded);
        xhr.onload = () => {
          const body = parse(xhr.responseText);
          if (xhr.status === 200) resolve({ done: true, file: body as FileInfo });
          else if (xhr.status === 202) resolve({ done: false, upload: body as UploadInfo });
          else reject(errorFromBody(xhr.status, xhr.statusText, body));
        };
        xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was cut off'));
        xhr.onabort = xhr.onerror;
        xhr.ontimeout = xhr.onerror;
        xhr.send(body);
      });
    },
    async status(id) {
      let r: Response;
      try {
        r = await fetch(`/api/v1/uploads/${encodeURIComponent(id)}`, {
          credentials,
          headers: { ...auth(), Accept: 'application/json' },
        });
      } catch (e) {
        throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
      }
      const body = parse(await r.text());
      if (!r.ok) throw errorFromBody(r.status, r.statusText, body);
      return body as UploadInfo;
    },
  };
}

/** The client's transport: the session cookie with this browser's device. */
export const xhrTransport: Transport = httpTransport(() => ({ 'Veche-Device': deviceId() }));

/** Backoff for upload retries: 1, 2, 4 … 30 s, cut short when the browser comes back online. */
export function backoff(attempt: number): Promise<void> {
  const ms = Math.min(30_000, 1000 * 2 ** Math.min(attempt - 1, 5));
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      removeEventListener('online', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    addEventListener('online', done);
  });
}
