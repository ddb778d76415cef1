// UI text: two JSON catalogs with the same keys, `{name}` placeholders, and
// plural entries keyed by `Intl.PluralRules` category. Dates, times and numbers
// through `Intl`. No i18n library.
//
// The language is a signal: components that call `t()` while rendering
// re-render when it changes.
import { signal } from '@preact/signals';
import en from './en.json';
import ru from './ru.json';

export type Lang = 'ru' | 'en';
/** The user's choice: a language, or `auto` (the browser's). */
export type LangChoice = Lang | 'auto';
export type PluralForms = Partial<Record<Intl.LDMLPluralRule, string>> & { other: string };
export type Catalog = Record<string, string | PluralForms>;
export type Key = keyof typeof en;
export type Params = Record<string, string | number>;

export const catalogs: Record<Lang, Catalog> = { en, ru };
export const LANGS: Lang[] = ['ru', 'en'];

/**
 * The first of the browser's languages we have: `ru*` → Russian, `en*` →
 * English; neither → English.
 */
export function detectLanguage(tags: string | readonly string[] | undefined | null): Lang {
  const list = typeof tags === 'string' ? [tags] : (tags ?? []);
  for (const tag of list) {
    const t = tag.toLowerCase();
    if (t.startsWith('ru')) return 'ru';
    if (t.startsWith('en')) return 'en';
  }
  return 'en';
}

function browserTags(): readonly string[] {
  if (typeof navigator === 'undefined') return [];
  return navigator.languages?.length ? navigator.languages : [navigator.language];
}

/** The language the browser asks for. */
export function browserLanguage(): Lang {
  return detectLanguage(browserTags());
}

/** The current language (a signal, so renders follow it). */
export const lang = signal<Lang>(browserLanguage());
let rules = new Intl.PluralRules(lang.peek());

export function language(): Lang {
  return lang.value;
}

export function setLanguage(next: Lang): void {
  if (next !== lang.peek()) rules = new Intl.PluralRules(next);
  lang.value = next;
  if (typeof document !== 'undefined') document.documentElement.lang = next;
}

/** Follows a choice: a language, or the browser's for `auto` (or anything unknown). */
export function applyLanguageChoice(choice: unknown): LangChoice {
  const c: LangChoice = choice === 'ru' || choice === 'en' ? choice : 'auto';
  setLanguage(c === 'auto' ? browserLanguage() : c);
  return c;
}

/**
 * The locale for `Intl`: the browser's own tag when it is of the current
 * language (so an English reader in Britain gets 24-hour times), else the language.
 */
export function localeTag(): string {
  const l = lang.value;
  return browserTags().find((tag) => tag.toLowerCase().startsWith(l)) ?? l;
}

function fill(text: string, params?: Params): string {
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

/** Picks the form for `n` by the current language's plural rules. */
export function plural(n: number, forms: PluralForms, params?: Params): string {
  void lang.value;
  const text = forms[rules.select(n)] ?? forms.other;
  return fill(text, { n, ...params });
}

/** Looks `key` up in the current catalog (falling back to English). */
export function t(key: Key, params?: Params): string {
  const entry = catalogs[lang.value][key] ?? catalogs.en[key];
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

function intl(options: Intl.DateTimeFormatOptions, locale?: string): Intl.DateTimeFormat {
  try {
    return new Intl.DateTimeFormat(locale ?? localeTag(), options);
  } catch {
    return new Intl.DateTimeFormat(lang.value, options);
  }
}

/**
 * A moment (epoch milliseconds) in the local time zone: `dd.MM.yyyy HH:mm` in
 * Russian (24-hour clock); the browser's own style in English.
 */
export function formatDateTime(ms: number, locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  if (lang.value === 'ru') {
    return `${pad2(d.getDate())}.${pad2(d.getMonth() + 1)}.${d.getFullYear()} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }
  return intl({ year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }, locale).format(d);
}

/** A time of day: `HH:mm` (24-hour) in Russian, the browser's own style in English. */
export function formatTime(ms: number, locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  if (lang.value === 'ru') return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return intl({ hour: 'numeric', minute: '2-digit' }, locale).format(d);
}

/** Local midnight of a moment's day. */
function startOfDay(ms: number): number {
  const d = new Date(ms);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/**
 * A calendar day for day separators, as people say it: "Сегодня" / "Today",
 * "Вчера" / "Yesterday", the weekday within the last week ("Понедельник"),
 * "5 января" / "January 5" earlier this year, "5 января 2025 г." / "January 5,
 * 2025" before it. `now` is the reader's clock.
 */
export function formatDay(ms: number, now: number = Date.now(), locale?: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  const today = startOfDay(now);
  const day = startOfDay(ms);
  // Days between the two midnights, robust to a daylight-saving hour.
  const ago = Math.round((today - day) / 86_400_000);
  if (ago === 0) return t('day.today');
  if (ago === 1) return t('day.yesterday');
  if (ago > 1 && ago < 7) {
    const name = intl({ weekday: 'long' }, locale).format(d);
    return name.charAt(0).toLocaleUpperCase(lang.value) + name.slice(1);
  }
  const sameYear = d.getFullYear() === new Date(now).getFullYear();
  return intl(sameYear ? { day: 'numeric', month: 'long' } : { day: 'numeric', month: 'long', year: 'numeric' }, locale).format(d);
}

/** The local calendar day of a moment, as a sortable key (`2026-12-07`). */
export function dayKey(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

/** A number in the current language's style: `1,5` in Russian, `1.5` in English. */
export function formatNumber(n: number, maxFractionDigits = 1): string {
  try {
    return new Intl.NumberFormat(localeTag(), { maximumFractionDigits: maxFractionDigits }).format(n);
  } catch {
    return String(n);
  }
}
