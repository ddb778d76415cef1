import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { ApiError } from '../src/api';
import { checkFile, formatSize, typeMatches, type FilePolicy } from '../src/files/policy';
import { Sha256, hashBlob } from '../src/files/sha256';
import { runUpload, type PutResult, type Transport, type UploadInfo } from '../src/files/upload';

const policy: FilePolicy = {
  enabled: true,
  discussion_kinds: ['dialog', 'group', 'object'],
  max_size: 10 << 20,
  allowed_types: [],
  blocked_types: ['application/x-msdownload'],
  blocked_extensions: ['exe', 'bat'],
  quota: 50 << 20,
  used: 45 << 20,
  retention_days: 0,
};

describe('sha256', () => {
  test('matches node:crypto across block boundaries and split updates', () => {
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100_000]) {
      const data = new Uint8Array(n).map((_, i) => (i * 31 + 7) & 255);
      const want = createHash('sha256').update(data).digest('hex');
      expect(new Sha256().update(data).hex()).toBe(want);
      const h = new Sha256();
      for (let i = 0; i < n; i += 37) h.update(data.subarray(i, i + 37));
      expect(h.hex()).toBe(want);
    }
  });

  test('hashes a Blob in chunks', async () => {
    const data = new Uint8Array(10_000).map((_, i) => i & 255);
    const seen: number[] = [];
    const hex = await hashBlob(new Blob([data]), (d) => seen.push(d), 4096);
    expect(hex).toBe(createHash('sha256').update(data).digest('hex'));
    expect(seen).toEqual([4096, 8192, 10_000]);
  });
});

describe('file policy', () => {
  const file = { name: 'акт.pdf', size: 1000, type: 'application/pdf' };
  test('a file within the rules passes', () => {
    expect(checkFile(policy, 'dialog', file)).toBeNull();
  });
  test('each rule is named', () => {
    expect(checkFile({ ...policy, enabled: false }, 'dialog', file)?.rule).toBe('files.enabled');
    expect(checkFile({ ...policy, discussion_kinds: ['group'] }, 'dialog', file)?.rule).toBe('files.discussion_kinds');
    expect(checkFile(policy, 'dialog', { ...file, size: 11 << 20 })).toEqual({ rule: 'files.max_size_mb', limit: '10 MB' });
    expect(checkFile(policy, 'dialog', { ...file, name: 'setup.EXE' })).toEqual({ rule: 'files.blocked_extensions', limit: 'exe' });
    expect(checkFile(policy, 'dialog', { ...file, size: 6 << 20 })?.rule).toBe('files.quota_mb');
    expect(checkFile(policy, 'dialog', file, 5 << 20)?.rule).toBe('files.quota_mb');
    expect(checkFile(policy, 'dialog', { ...file, type: 'application/x-msdownload' })?.rule).toBe('files.blocked_types');
    expect(checkFile({ ...policy, allowed_types: ['image/*'] }, 'dialog', file)?.rule).toBe('files.allowed_types');
    expect(checkFile({ ...policy, allowed_types: ['image/*'] }, 'dialog', { ...file, type: 'image/png' })).toBeNull();
  });
  test('no quota and no size limit', () => {
    expect(checkFile({ ...policy, quota: 0, max_size: 0 }, 'dialog', { ...file, size: 1 << 30 })).toBeNull();
  });
  test('type patterns and sizes', () => {
    expect(typeMatches('image/*', 'image/png')).toBe(true);
    expect(typeMatches('image/*', 'application/pdf')).toBe(false);
    expect(typeMatches('*/*', 'x/y')).toBe(true);
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(1536)).toBe('1.5 KB');
    expect(formatSize(20 << 20)).toBe('20 MB');
  });
});

/** A fake node: holds the bytes it got; `cut` makes the given PUT calls deliver only part and then fail. */
function fakeNode(size: number, cuts: Record<number, number> = {}) {
  let confirmed = 0;
  let puts = 0;
  const log: string[] = [];
  const t: Transport = {
    async put(id, offset, body, onProgress): Promise<PutResult> {
      puts += 1;
      log.push(`put ${offset}+${body.size}`);
      if (offset !== confirmed) throw new ApiError(409, 'conflict', `offset must be ${confirmed}`);
      const cut = cuts[puts];
      if (cut !== undefined) {
        confirmed += Math.min(cut, body.size);
        onProgress(cut);
        throw new ApiError(0, 'network', 'cut');
      }
      confirmed += body.size;
      onProgress(body.size);
      if (confirmed === size) return { done: true, file: { id: 'f_1', size } as never };
      return { done: false, upload: { id, size, confirmed, expires_at: 0 } };
    },
    async status(id) {
      log.push(`status ${confirmed}`);
      return { id, size, confirmed, expires_at: 0 };
    },
  };
  return { t, log };
}

describe('resumable upload', () => {
  const blob = new Blob([new Uint8Array(10)]);
  const upload: UploadInfo = { id: 'up_1', size: 10, confirmed: 0, expires_at: 0 };

  test('sends chunk after chunk', async () => {
    const { t, log } = fakeNode(10);
    const file = await runUpload(blob, upload, t, { chunk: 4 });
    expect(file.id).toBe('f_1');
    expect(log).toEqual(['put 0+4', 'put 4+4', 'put 8+2']);
  });

  test('a cut connection resumes from what the node confirmed, not from what was sent', async () => {
    const { t, log } = fakeNode(10, { 2: 1 });
    const waits: number[] = [];
    const file = await runUpload(blob, upload, t, { chunk: 4, waitRetry: async (n) => void waits.push(n) });
    expect(file.id).toBe('f_1');
    expect(log).toEqual(['put 0+4', 'put 4+4', 'status 5', 'put 5+4', 'put 9+1']);
    expect(waits).toEqual([1]);
  });

  test('starts from an upload that is already partly there', async () => {
    const { t, log } = fakeNode(10);
    await runUpload(blob, upload, t, { chunk: 4 });
    expect(log[0]).toBe('put 0+4');
    const again = fakeNode(10);
    // The node holds 6 bytes already (a reload found the upload).
    await again.t.put('up_1', 0, new Blob([new Uint8Array(6)]), () => {});
    again.log.length = 0;
    await runUpload(blob, { ...upload, confirmed: 6 }, again.t, { chunk: 4 });
    expect(again.log).toEqual(['put 6+4']);
  });

  test('a refusal is not retried', async () => {
    const t: Transport = {
      put: async () => {
        throw new ApiError(400, 'bad_request', 'sha256 mismatch');
      },
      status: async () => ({ id: 'up_1', size: 10, confirmed: 0, expires_at: 0 }),
    };
    await expect(runUpload(blob, upload, t)).rejects.toMatchObject({ code: 'bad_request' });
  });

  test('a finished upload found by status ends it', async () => {
    let calls = 0;
    const t: Transport = {
      put: async () => {
        calls += 1;
        throw new ApiError(0, 'network', 'cut');
      },
      status: async () => ({ id: 'up_1', size: 10, confirmed: 10, expires_at: 0, file: { id: 'f_9' } as never }),
    };
    expect((await runUpload(blob, upload, t)).id).toBe('f_9');
    expect(calls).toBe(1);
  });
});
