// Files are hashed in the page, a chunk at a time, without holding the whole
// file in memory: `crypto.subtle` cannot stream and is missing on plain-HTTP
// LAN nodes (not a secure context). The hash is @noble/hashes' SHA-256.
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

/** A streaming SHA-256: `update` with each piece, then `hex`. */
export class Sha256 {
  private readonly h = sha256.create();

  update(data: Uint8Array): this {
    this.h.update(data);
    return this;
  }

  /** The digest in lowercase hex; the hash cannot be updated after this. */
  hex(): string {
    return bytesToHex(this.h.digest());
  }
}

/** Hashes a Blob 4 MiB at a time, yielding between chunks; `onProgress(bytesDone)`. */
export async function hashBlob(blob: Blob, onProgress?: (done: number) => void, chunk = 4 << 20): Promise<string> {
  const h = new Sha256();
  for (let at = 0; at < blob.size; at += chunk) {
    const part = new Uint8Array(await blob.slice(at, at + chunk).arrayBuffer());
    h.update(part);
    onProgress?.(Math.min(blob.size, at + chunk));
  }
  return h.hex();
}
