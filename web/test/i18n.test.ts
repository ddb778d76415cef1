import { afterEach, describe, expect, it } from 'vitest';
import en from '../src/i18n/en.json';
import ru from '../src/i18n/ru.json';
import { detectLanguage, formatDateTime, plural, setLanguage, t, tn, type Catalog } from '../src/i18n';

const NUMBERS = [0, 1, 2, 5, 11, 21, 111];
const forms = { one: 'one', few: 'few', many: 'many', other: 'other' };

afterEach(() => setLanguage('en'));

describe('plural', () => {
  it('follows Russian rules', () => {
    setLanguage('ru');
    expect(NUMBERS.map((n) => plural(n, forms))).toEqual(['many', 'one', 'few', 'many', 'many', 'one', 'many']);
  });

  it('follows English rules', () => {
    setLanguage('en');
    expect(NUMBERS.map((n) => plural(n, forms))).toEqual(['other', 'one', 'other', 'other', 'other', 'other', 'other']);
  });

  it('falls back to other and fills {n}', () => {
    setLanguage('ru');
    expect(plural(2, { other: '{n} x' })).toBe('2 x');
  });

  it('reads plural catalog entries in Russian', () => {
    setLanguage('ru');
    expect(NUMBERS.map((n) => tn('discussions.unread', n))).toEqual([
      '0 непрочитанных сообщений',
      '1 непрочитанное сообщение',
      '2 непрочитанных сообщения',
      '5 непрочитанных сообщений',
      '11 непрочитанных сообщений',
      '21 непрочитанное сообщение',
      '111 непрочитанных сообщений',
    ]);
  });

  it('reads plural catalog entries in English', () => {
    setLanguage('en');
    expect(NUMBERS.map((n) => tn('sessions.count', n))).toEqual([
      '0 active sessions',
      '1 active session',
      '2 active sessions',
      '5 active sessions',
      '11 active sessions',
      '21 active sessions',
      '111 active sessions',
    ]);
  });
});

describe('catalogs', () => {
  const catalogs: Record<'ru' | 'en', Catalog> = { ru, en };

  it('have the same keys', () => {
    expect(Object.keys(ru).sort()).toEqual(Object.keys(en).sort());
  });

  it('give every plural entry the forms its language needs', () => {
    for (const lang of ['ru', 'en'] as const) {
      const needed = new Intl.PluralRules(lang).resolvedOptions().pluralCategories;
      for (const [key, entry] of Object.entries(catalogs[lang])) {
        const other = catalogs[lang === 'ru' ? 'en' : 'ru'][key];
        expect(typeof entry, `${lang} ${key}`).toBe(typeof other);
        if (typeof entry === 'string') continue;
        for (const category of needed) expect(entry[category], `${lang} ${key} ${category}`).toBeTypeOf('string');
      }
    }
  });

  it('use the same placeholders in both languages', () => {
    const placeholders = (entry: Catalog[string]) =>
      [...new Set(JSON.stringify(entry).match(/\{\w+\}/g) ?? [])].sort();
    for (const key of Object.keys(en)) {
      expect(placeholders((ru as Catalog)[key]), key).toEqual(placeholders((en as Catalog)[key]));
    }
  });
});

describe('t', () => {
  it('fills parameters and leaves unknown ones', () => {
    setLanguage('en');
    expect(t('error.unknown', { status: 502 })).toBe('Something went wrong (HTTP 502).');
    expect(t('error.unknown')).toBe('Something went wrong (HTTP {status}).');
  });

  it('speaks Russian after setLanguage', () => {
    setLanguage('ru');
    expect(t('error.invalid_credentials')).toBe('Неверный логин или пароль.');
  });

  it('detects the language', () => {
    expect(detectLanguage('ru-RU')).toBe('ru');
    expect(detectLanguage('ru')).toBe('ru');
    expect(detectLanguage('RU-ru')).toBe('ru');
    expect(detectLanguage('en-US')).toBe('en');
    expect(detectLanguage('uk-UA')).toBe('en');
    expect(detectLanguage(undefined)).toBe('en');
  });
});

describe('formatDateTime', () => {
  it('is dd.MM.yyyy HH:mm in Russian, in local time', () => {
    setLanguage('ru');
    const local = new Date(2026, 0, 5, 7, 3).getTime();
    expect(formatDateTime(local)).toBe('05.01.2026 07:03');
    const evening = new Date(2025, 11, 31, 23, 59).getTime();
    expect(formatDateTime(evening)).toBe('31.12.2025 23:59');
  });

  it('uses the given locale in English', () => {
    setLanguage('en');
    const ms = new Date(2026, 0, 5, 17, 3).getTime();
    const text = formatDateTime(ms, 'en-GB');
    expect(text).toContain('05/01/2026');
    expect(text).toContain('17:03');
  });
});
