// Writes <file>.gz (gzip level 9) and <file>.br (brotli quality 11) next to
// every .js/.css/.html/.json/.svg file in dist/, for the node to pick by
// Accept-Encoding. Both are deterministic: gzip gets no name and mtime 0, and
// brotli's output depends only on its input and parameters.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

export const COMPRESSIBLE = /\.(js|css|html|json|svg)$/;

/** @param {Buffer} bytes */
export function gzip(bytes) {
  return gzipSync(bytes, { level: 9 });
}

/** @param {Buffer} bytes */
export function brotli(bytes) {
  return brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
}

/** @param {string} dir @returns {string[]} */
function files(dir) {
  /** @type {string[]} */
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(path));
    else if (entry.isFile()) out.push(path);
  }
  return out.sort();
}

/**
 * Compresses the files of `distDir`; returns [path, raw, gzip, brotli] sizes.
 * @param {string} distDir
 * @returns {Array<[string, number, number, number]>}
 */
export function compressDist(distDir) {
  /** @type {Array<[string, number, number, number]>} */
  const sizes = [];
  for (const path of files(distDir)) {
    if (!COMPRESSIBLE.test(path)) continue;
    const bytes = readFileSync(path);
    const gz = gzip(bytes);
    const br = brotli(bytes);
    writeFileSync(`${path}.gz`, gz);
    writeFileSync(`${path}.br`, br);
    sizes.push([path.slice(distDir.length + 1).split('\\').join('/'), bytes.length, gz.length, br.length]);
  }
  return sizes;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dist = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'dist');
  for (const [path, raw, gz, br] of compressDist(dist)) {
    console.log(`${path.padEnd(32)} ${String(raw).padStart(7)} B  gzip ${String(gz).padStart(6)} B  br ${String(br).padStart(6)} B`);
  }
}
