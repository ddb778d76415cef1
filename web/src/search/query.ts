// The search box's language: words, plus filters that become chips.
//   from:ivanov  in:"Счёт 42"  has:file  after:2026-12-01  before:07.12.2026  on:01.12
// Russian spellings work too: от: в: есть:файл после: до: дата:. Values may be
// quoted; quoted words stay a phrase in the text. Pure functions, no IO.

export type ChipKind = 'from' | 'in' | 'has' | 'after' | 'before' | 'on';

export interface Chip {
  kind: ChipKind;
  /** As typed (unquoted). */
  value: string;
  /** For dates: local midnight of the day, epoch ms. */
  day?: number;
}

export interface ParsedQuery {
  /** What goes to the node as `query`: the words that are not filters. */
  text: string;
  chips: Chip[];
}

const KEYS: Record<string, ChipKind> = {
  from: 'from',
  'от': 'from',
  in: 'in',
  'в': 'in',
  has: 'has',
  'есть': 'has',
  after: 'after',
  'после': 'after',
  since: 'after',
  before: 'before',
  'до': 'before',
  on: 'on',
  'дата': 'on',
};

const FILE_WORDS = new Set(['file', 'files', 'файл', 'файлы', 'файлом']);

/** `2026-12-01`, `01.12.2026`, `1.12.26` or `01.12` (this year) → local midnight, or null. */
export function parseDay(text: string, now: Date = new Date()): number | null {
  let y: number, m: number, d: number;
  let match = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(text);
  if (match) {
    [y, m, d] = [Number(match[1]), Number(match[2]), Number(match[3])];
  } else if ((match = /^(\d{1,2})\.(\d{1,2})(?:\.(\d{2}|\d{4}))?$/.exec(text))) {
    d = Number(match[1]);
    m = Number(match[2]);
    y = match[3] === undefined ? now.getFullYear() : match[3].length === 2 ? 2000 + Number(match[3]) : Number(match[3]);
  } else return null;
  const date = new Date(y, m - 1, d);
  if (date.getFullYear() !== y || date.getMonth() !== m - 1 || date.getDate() !== d) return null;
  return date.getTime();
}

/** Splits into tokens: `key:"quoted value"`, `"a phrase"`, or a bare word. */
function tokens(input: string): { raw: string; key?: string; value: string; quoted: boolean }[] {
  const out: { raw: string; key?: string; value: string; quoted: boolean }[] = [];
  const re = /([\p{L}\p{N}_]+):(?:"([^"]*)"?|(\S*))|"([^"]*)"?|(\S+)/gu;
  for (let m = re.exec(input); m; m = re.exec(input)) {
    if (m[1] !== undefined) out.push({ raw: m[0], key: m[1], value: m[2] ?? m[3] ?? '', quoted: m[2] !== undefined });
    else if (m[4] !== undefined) out.push({ raw: m[0], value: m[4], quoted: true });
    else out.push({ raw: m[0], value: m[5], quoted: false });
  }
  return out;
}

export function parseQuery(input: string, now: Date = new Date()): ParsedQuery {
  const words: string[] = [];
  const chips: Chip[] = [];
  for (const tok of tokens(input)) {
    const kind = tok.key === undefined ? undefined : KEYS[tok.key.toLowerCase()];
    if (kind && tok.value !== '') {
      if (kind === 'has') {
        if (FILE_WORDS.has(tok.value.toLowerCase())) {
          chips.push({ kind, value: 'file' });
          continue;
        }
      } else if (kind === 'after' || kind === 'before' || kind === 'on') {
        const day = parseDay(tok.value, now);
        if (day !== null) {
          chips.push({ kind, value: tok.value, day });
          continue;
        }
      } else {
        chips.push({ kind, value: kind === 'from' ? tok.value.replace(/^@/, '') : tok.value });
        continue;
      }
    }
    // Not a filter: a word (a quoted phrase keeps its quotes).
    if (tok.key === undefined) words.push(tok.quoted ? `"${tok.value}"` : tok.value);
    else words.push(tok.raw);
  }
  return { text: words.join(' ').trim(), chips };
}

/** The query without one chip (for its remove button): the chips written back in English. */
export function formatQuery(q: ParsedQuery): string {
  const parts = q.chips.map((c) => {
    const v = c.kind === 'has' ? 'file' : /[\s"]/.test(c.value) ? `"${c.value.replace(/"/g, '')}"` : c.value;
    return `${c.kind}:${v}`;
  });
  if (q.text) parts.push(q.text);
  return parts.join(' ');
}

const DAY = 24 * 60 * 60 * 1000;

/** The next local midnight after `day` (DST-safe). */
export function nextDay(day: number): number {
  const d = new Date(day + DAY + 2 * 60 * 60 * 1000);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** Time bounds of the date chips: `from` inclusive, `to` exclusive (as the node takes them). */
export function bounds(chips: Chip[]): { from?: number; to?: number } {
  let from: number | undefined;
  let to: number | undefined;
  const later = (a: number | undefined, b: number) => (a === undefined ? b : Math.max(a, b));
  const earlier = (a: number | undefined, b: number) => (a === undefined ? b : Math.min(a, b));
  for (const c of chips) {
    if (c.day === undefined) continue;
    if (c.kind === 'after') from = later(from, nextDay(c.day));
    if (c.kind === 'before') to = earlier(to, c.day);
    if (c.kind === 'on') {
      from = later(from, c.day);
      to = earlier(to, nextDay(c.day));
    }
  }
  return { from, to };
}
