// Files being attached in the composer: checked against the node's policy,
// hashed, uploaded with progress and resumed after a cut connection. Kept in
// memory for the page's life (the File objects cannot outlive it).
import { signal } from '@preact/signals';
import * as api from '../api';
import type { DiscussionInfo } from '../api';
import { deviceId } from '../device';
import { checkFile, formatSize, refusalText } from './policy';
import { hashBlob } from './sha256';
import { backoff, runUpload, xhrTransport, type FileInfo } from './upload';

export type AttachmentState = 'hashing' | 'uploading' | 'retrying' | 'done' | 'failed';

export interface Attachment {
  key: string;
  discussion: string;
  name: string;
  size: number;
  state: AttachmentState;
  /** Bytes hashed (hashing) or sent (uploading). */
  progress: number;
  file?: FileInfo;
  /** Why it failed: text for display. */
  error?: string;
}

export const attachments = signal<Attachment[]>([]);
const cancelled = new Set<string>();
const uploadIds = new Map<string, string>();
let counter = 0;

function patch(key: string, change: Partial<Attachment>): void {
  attachments.value = attachments.value.map((a) => (a.key === key ? { ...a, ...change } : a));
}

/** Files the user dropped, pasted or picked: each checked, then uploaded. Returns the refusals' texts. */
export async function addFiles(d: DiscussionInfo, files: File[], errorText: (e: unknown) => string): Promise<string[]> {
  if (files.length === 0) return [];
  let policy;
  try {
    policy = await api.filePolicy();
  } catch (e) {
    return [errorText(e)];
  }
  const refusals: string[] = [];
  let pending = attachments.value.filter((a) => a.state !== 'done' && a.state !== 'failed').reduce((n, a) => n + a.size, 0);
  for (const f of files) {
    const refusal = checkFile(policy, d.kind, { name: f.name, size: f.size, type: f.type }, pending);
    if (refusal) {
      refusals.push(refusalText(f.name, refusal));
      continue;
    }
    pending += f.size;
    const key = `a${++counter}`;
    attachments.value = [...attachments.value, { key, discussion: d.id, name: f.name, size: f.size, state: 'hashing', progress: 0 }];
    void upload(key, d.id, f, errorText);
  }
  return refusals;
}

async function upload(key: string, discussion: string, f: File, errorText: (e: unknown) => string): Promise<void> {
  try {
    const sha = await hashBlob(f, (done) => patch(key, { progress: done }));
    if (cancelled.has(key)) return;
    const up = await api.createUpload(discussion, f.name, f.size, sha);
    uploadIds.set(key, up.id);
    patch(key, { state: 'uploading', progress: up.confirmed });
    const file = await runUpload(f, up, xhrTransport, {
      onProgress: (bytes) => {
        const a = attachments.value.find((x) => x.key === key);
        if (a && (a.progress !== bytes || a.state !== 'uploading')) patch(key, { progress: bytes, state: 'uploading' });
      },
      waitRetry: (attempt) => {
        patch(key, { state: 'retrying' });
        return backoff(attempt);
      },
      cancelled: () => cancelled.has(key),
    });
    patch(key, { state: 'done', progress: f.size, file });
  } catch (e) {
    if (cancelled.has(key)) return;
    const text =
      e instanceof api.ApiError && e.rule ? refusalText(f.name, { rule: e.rule }) : `${f.name}: ${errorText(e)}`;
    patch(key, { state: 'failed', error: text });
  }
}

/** Removes an attachment (cancelling its upload on the node). */
export function removeAttachment(key: string): void {
  cancelled.add(key);
  const id = uploadIds.get(key);
  const a = attachments.value.find((x) => x.key === key);
  if (id && a?.state !== 'done') {
    void fetch(`/api/v1/uploads/${encodeURIComponent(id)}`, { method: 'DELETE', credentials: 'same-origin', headers: { 'Veche-Device': deviceId() } }).catch(() => {});
  }
  attachments.value = attachments.value.filter((x) => x.key !== key);
}

/** Whether the discussion's composer still waits for an upload. */
export function uploading(discussion: string): boolean {
  return attachments.value.some((a) => a.discussion === discussion && a.state !== 'done' && a.state !== 'failed');
}

/** Takes the finished files of a discussion (for `send`) out of the composer. */
export function takeDone(discussion: string): string[] {
  const done = attachments.value.filter((a) => a.discussion === discussion && a.state === 'done' && a.file);
  attachments.value = attachments.value.filter((a) => !done.includes(a));
  return done.map((a) => a.file!.id);
}

export function clearAttachments(): void {
  for (const a of attachments.value) cancelled.add(a.key);
  attachments.value = [];
  uploadIds.clear();
}

export { formatSize };
