// dist/.source-hash: SHA-256 over the build's inputs, so a Rust test can tell
// when the committed dist/ is stale. The Rust side reimplements this exactly:
//
//   inputs = every regular file under src/, public/ and scripts/ (recursively, when the
//            folder exists; symlinks are not followed and not counted), plus
//            those of index.html, embed.html, package.json, package-lock.json,
//            vite.config.ts, tsconfig.json that exist;
//   path   = the file's path relative to web/, '/'-separated ("src/main.tsx");
//   order  = paths sorted by their UTF-8 bytes, ascending;
//   hash   = SHA-256 over, for each file in order:
//            path bytes, 0x0A, file length in bytes as decimal ASCII, 0x0A, file bytes;
//   output = lowercase hex digest and "\n", written to dist/.source-hash.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const INPUT_DIRS = ['src', 'public', 'scripts'];
export const INPUT_FILES = [
  'index.html',
  'embed.html',
  'package.json',
  'package-lock.json',
  'vite.config.ts',
  'tsconfig.json',
];

/** @param {string} dir absolute @param {string} rel '/'-separated @param {string[]} out */
function walk(dir, rel, out) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const childRel = `${rel}/${entry.name}`;
    if (entry.isDirectory()) walk(join(dir, entry.name), childRel, out);
    else if (entry.isFile()) out.push(childRel);
  }
}

/** @param {string} path */
function isFile(path) {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
  } catch {
    return false;
  }
}

/** @param {string} path */
function isDir(path) {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false;
  } catch {
    return false;
  }
}

/**
 * The input paths, relative to `webDir`, in hashing order.
 * @param {string} webDir
 * @returns {string[]}
 */
export function sourceInputs(webDir) {
  /** @type {string[]} */
  const paths = [];
  for (const d of INPUT_DIRS) {
    if (isDir(join(webDir, d))) walk(join(webDir, d), d, paths);
  }
  for (const f of INPUT_FILES) {
    if (isFile(join(webDir, f))) paths.push(f);
  }
  return paths.sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

/**
 * The lowercase hex SHA-256 of the build inputs under `webDir`.
 * @param {string} webDir
 * @returns {string}
 */
export function sourceHash(webDir) {
  const hash = createHash('sha256');
  for (const rel of sourceInputs(webDir)) {
    const bytes = readFileSync(join(webDir, ...rel.split('/')));
    hash.update(Buffer.from(rel, 'utf8'));
    hash.update(Buffer.from(`\n${bytes.length}\n`, 'ascii'));
    hash.update(bytes);
  }
  return hash.digest('hex');
}

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = join(webDir, 'dist', '.source-hash');
  mkdirSync(dirname(out), { recursive: true });
  const value = sourceHash(webDir);
  writeFileSync(out, `${value}\n`);
  console.log(`dist/.source-hash ${value}`);
}
