// UI text: two JSON catalogs with the same keys, `{name}` placeholders, and
// plural entries keyed by `Intl.PluralRules` category. No i18n library.
import en from './en.json';
import ru from './ru.json';

export type Lang = 'ru' | 'en';
export type PluralForms = Partial<Record<Intl.LDMLPluralRule, string>> & { other: string };
export type Catalog = Record<string, string | PluralForms>;
export type Key = keyof typeof en;
export type Params = Record<string, string | number>;

export const catalogs: Record<Lang, Catalog> = { en, ru };

/** `ru*` → Russian, anything else → English. */
export function detectLanguage(tag: string | undefined | null): Lang {
  return tag && tag.toLowerCase().startsWith('ru') ? 'ru' : 'en';
}

let lang: Lang = detectLanguage(typeof navigator === 'undefined' ? 'en' : navigator.language);
let rules = new Intl.PluralRules(lang);

export function language(): Lang {
  return lang;
}

export function setLanguage(next: Lang): void {
  lang = next;
  rules = new Intl.PluralRules(next);
}

function fill(text: string, params?: Params): string {
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

/** Picks the form for `n` by the current language's plural rules. */
export function plural(n: number, forms: PluralForms, params?: Params): string {
  const text = forms[rules.select(n)] ?? forms.other;
  return fill(text, { n, ...params });
}

/** Looks `key` up in the current catalog (falling back to English). */
export function t(key: Key, params?: Params): string {
  const entry = catalogs[lang][key] ?? catalogs.en[key];
  if (entry === undefined) return key;
  if (typeof entry === 'string') return fill(entry, params);
  const n = Number(params?.n ?? 0);
  return plural(n, entry, params);
}

/** Shorthand for a plural catalog entry: `tn('sessions.count', 3)`. */
export function tn(key: Key, n: number, params?: Params): string {
  return t(key, { ...params, n });
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * A moment (epoch milliseconds) in the local time zone: `dd.MM.yyyy HH:mm` in
 * Russian (24-hour clock); the browser's own locale in English.
 */
export function formatDateTime(ms: number, locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  if (lang === 'ru') {
    return `${pad2(d.getDate())}.${pad2(d.getMonth() + 1)}.${d.getFullYear()} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }
  const tag = locale ?? (typeof navigator === 'undefined' ? undefined : navigator.language);
  try {
    return new Intl.DateTimeFormat(tag, {
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
    }).format(d);
  } catch {
    return d.toISOString().slice(0, 16).replace('T', ' ');
  }
}

/** A calendar day for day separators: `dd.MM.yyyy` in Russian, the browser's own style in English. */
export function formatDay(ms: number, locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  if (lang === 'ru') return `${pad2(d.getDate())}.${pad2(d.getMonth() + 1)}.${d.getFullYear()}`;
  const tag = locale ?? (typeof navigator === 'undefined' ? undefined : navigator.language);
  try {
    return new Intl.DateTimeFormat(tag, { year: 'numeric', month: 'long', day: 'numeric' }).format(d);
  } catch {
    return d.toISOString().slice(0, 10);
  }
}

/** A time of day: `HH:mm` (24-hour) in Russian, the browser's own style in English. */
export function formatTime(ms: number, locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  if (lang === 'ru') return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const tag = locale ?? (typeof navigator === 'undefined' ? undefined : navigator.language);
  try {
    return new Intl.DateTimeFormat(tag, { hour: '2-digit', minute: '2-digit' }).format(d);
  } catch {
    return d.toISOString().slice(11, 16);
  }
}

/** The local calendar day of a moment, as a sortable key (`2026-12-07`). */
export function dayKey(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}
