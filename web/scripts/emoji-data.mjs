// Writes dist/emoji/{en,ru}.json from emoji-picker-element-data: what the
// composer's picker and `:shortcode:` completion need, served by the node
// itself (no CDN) and loaded only when first used.
// en: GitHub (gemoji) shortcodes, the ones the node converts in text.
// ru: the CLDR Russian names and words, with the GitHub shortcodes too.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const data = join(web, 'node_modules', 'emoji-picker-element-data');
const out = join(web, 'dist', 'emoji');

/** @param {string} path */
async function load(path) {
  return JSON.parse(await readFile(join(data, path), 'utf8'));
}

/** @param {any[]} list */
function trim(list, extraShortcodes = new Map()) {
  return list
    .filter((e) => typeof e.group === 'number' && e.group !== 2) // 2: skin-tone components
    .sort((a, b) => a.order - b.order)
    .map((e) => {
      const s = [...new Set([...(extraShortcodes.get(e.emoji) ?? []), ...(e.shortcodes ?? [])])];
      /** @type {Record<string, unknown>} */
      const entry = { e: e.emoji, s, a: e.annotation ?? '', g: e.group };
      if (e.tags?.length) entry.t = e.tags;
      return entry;
    });
}

const en = await load('en/github/data.json');
const ru = await load('ru/cldr/data.json');
const github = new Map(en.map((/** @type {any} */ e) => [e.emoji, e.shortcodes ?? []]));
await mkdir(out, { recursive: true });
await writeFile(join(out, 'en.json'), JSON.stringify(trim(en)));
await writeFile(join(out, 'ru.json'), JSON.stringify(trim(ru, github)));
