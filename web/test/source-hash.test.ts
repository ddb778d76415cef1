import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sourceHash, sourceInputs } from '../scripts/source-hash.mjs';

const root = mkdtempSync(join(tmpdir(), 'veche-source-hash-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function put(dir: string, rel: string, content: string | Buffer): void {
  const path = join(dir, ...rel.split('/'));
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
}

describe('sourceHash', () => {
  const web = join(root, 'web');
  const files: Record<string, string | Buffer> = {
    'src/main.tsx': 'render(<App />)\n',
    'src/a.ts': 'export const a = 1;\r\n',
    'src/a/b.ts': 'export const b = 2;\n',
    'src/Z.ts': '',
    'src/é.ts': 'export const e = "ё";\n',
    'src/i18n/ru.json': '{"x": "Вече"}\n',
    'public/favicon.svg': Buffer.from([0x3c, 0x00, 0xff, 0x0a]),
    'index.html': '<!doctype html>\n',
    'package.json': '{}\n',
    'package-lock.json': '{"lockfileVersion": 3}\n',
    'vite.config.ts': 'export default {};\n',
    'tsconfig.json': '{}\n',
    'scripts/build.mjs': '//\n',
  };
  // Not inputs: other folders, other top-level files, and symlinks.
  const ignored: Record<string, string> = {
    'README.md': '# readme\n',
    'dist/index.html': '<html>\n',
    'test/x.test.ts': '//\n',
    'node_modules/preact/index.js': '//\n',
    'e2e/node.mjs': '//\n',
  };
  for (const [rel, content] of Object.entries(files)) put(web, rel, content);
  for (const [rel, content] of Object.entries(ignored)) put(web, rel, content);
  symlinkSync(join(web, 'index.html'), join(web, 'src', 'link.html'));

  // Sorted by UTF-8 bytes: 'Z' (5A) < 'a' (61) < 'é' (C3 A9); '.' (2E) < '/' (2F).
  const expectedOrder = [
    'index.html',
    'package-lock.json',
    'package.json',
    'public/favicon.svg',
    'scripts/build.mjs',
    'src/Z.ts',
    'src/a.ts',
    'src/a/b.ts',
    'src/i18n/ru.json',
    'src/main.tsx',
    'src/é.ts',
    'tsconfig.json',
    'vite.config.ts',
  ];

  it('lists the inputs in UTF-8 byte order', () => {
    expect(sourceInputs(web)).toEqual(expectedOrder);
  });

  it('hashes path, length and bytes of each input', () => {
    const parts: Buffer[] = [];
    for (const rel of expectedOrder) {
      const bytes = Buffer.from(files[rel] as string | Buffer);
      parts.push(Buffer.from(rel, 'utf8'), Buffer.from([0x0a]), Buffer.from(String(bytes.length), 'ascii'), Buffer.from([0x0a]), bytes);
    }
    const expected = createHash('sha256').update(Buffer.concat(parts)).digest('hex');
    expect(sourceHash(web)).toBe(expected);
    expect(sourceHash(web)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes when any input changes and only then', () => {
    const before = sourceHash(web);
    put(web, 'README.md', '# changed\n');
    put(web, 'dist/index.html', '<html>changed\n');
    expect(sourceHash(web)).toBe(before);
    put(web, 'src/a/b.ts', 'export const b = 3;\n');
    expect(sourceHash(web)).not.toBe(before);
    put(web, 'src/a/b.ts', files['src/a/b.ts'] as string);
    expect(sourceHash(web)).toBe(before);
    put(web, 'embed.html', '<!doctype html>\n');
    expect(sourceInputs(web)).toContain('embed.html');
    expect(sourceHash(web)).not.toBe(before);
  });

  it('works without src/ and public/', () => {
    const bare = join(root, 'bare');
    put(bare, 'package.json', '{}\n');
    const expected = createHash('sha256').update('package.json\n3\n{}\n').digest('hex');
    expect(sourceHash(bare)).toBe(expected);
  });
});
