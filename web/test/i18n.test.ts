import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import en from '../src/i18n/en.json';
import ru from '../src/i18n/ru.json';
import {
  applyLanguageChoice,
  browserLanguage,
  detectLanguage,
  formatDateTime,
  formatDay,
  formatTime,
  lang,
  plural,
  setLanguage,
  t,
  tn,
  type Catalog,
} from '../src/i18n';
import { formatSize } from '../src/files/policy';

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

  it('picks one, few and many for the numbers Russian speakers check', () => {
    setLanguage('ru');
    const cases: Array<[number, string]> = [
      [1, '1 сообщение'],
      [2, '2 сообщения'],
      [3, '3 сообщения'],
      [4, '4 сообщения'],
      [5, '5 сообщений'],
      [11, '11 сообщений'],
      [12, '12 сообщений'],
      [14, '14 сообщений'],
      [21, '21 сообщение'],
      [22, '22 сообщения'],
      [25, '25 сообщений'],
      [101, '101 сообщение'],
      [111, '111 сообщений'],
      [112, '112 сообщений'],
      [122, '122 сообщения'],
      [1001, '1001 сообщение'],
    ];
    const forms = { one: '{n} сообщение', few: '{n} сообщения', many: '{n} сообщений', other: '{n} сообщения' };
    for (const [n, want] of cases) expect(plural(n, forms), String(n)).toBe(want);
    // Fractions take "other" in Russian.
    expect(plural(1.5, forms)).toBe('1.5 сообщения');
  });

  it('reads every Russian plural entry with the right form', () => {
    setLanguage('ru');
    expect([1, 2, 5, 11, 21, 22, 25, 111].map((n) => tn('typing.many', n))).toEqual([
      '1 человек печатает…',
      '2 человека печатают…',
      '5 человек печатают…',
      '11 человек печатают…',
      '21 человек печатает…',
      '22 человека печатают…',
      '25 человек печатают…',
      '111 человек печатают…',
    ]);
    expect([1, 2, 5, 21, 22, 25].map((n) => tn('announce.files', n))).toEqual([
      '1 файл',
      '2 файла',
      '5 файлов',
      '21 файл',
      '22 файла',
      '25 файлов',
    ]);
    expect(tn('announce.many', 22, { discussion: 'Счёт 42' })).toBe('22 новых сообщения в «Счёт 42»');
    expect(tn('error.throttled', 21)).toBe('Слишком много попыток. Повторите через 21 секунду.');
    expect(tn('error.throttled', 25)).toBe('Слишком много попыток. Повторите через 25 секунд.');
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

  it('takes the first of the browser\'s languages that it has', () => {
    expect(detectLanguage(['uk-UA', 'ru-RU', 'en-US'])).toBe('ru');
    expect(detectLanguage(['de-DE', 'en-GB', 'ru'])).toBe('en');
    expect(detectLanguage([])).toBe('en');
  });

  it('follows a choice, and the browser for auto', () => {
    expect(applyLanguageChoice('ru')).toBe('ru');
    expect(lang.value).toBe('ru');
    expect(document.documentElement.lang).toBe('ru');
    expect(applyLanguageChoice('en')).toBe('en');
    expect(lang.value).toBe('en');
    expect(applyLanguageChoice('auto')).toBe('auto');
    expect(lang.value).toBe(browserLanguage());
    expect(applyLanguageChoice('klingon')).toBe('auto');
    expect(applyLanguageChoice(undefined)).toBe('auto');
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

describe('formatTime', () => {
  it('is a 24-hour HH:mm in Russian', () => {
    setLanguage('ru');
    expect(formatTime(new Date(2026, 0, 5, 7, 3).getTime())).toBe('07:03');
    expect(formatTime(new Date(2026, 0, 5, 19, 45).getTime())).toBe('19:45');
  });

  it('follows the English locale: 12-hour in the US, 24-hour in Britain', () => {
    setLanguage('en');
    const ms = new Date(2026, 0, 5, 19, 45).getTime();
    expect(formatTime(ms, 'en-US')).toMatch(/^7:45\sPM$/);
    expect(formatTime(ms, 'en-GB')).toBe('19:45');
  });
});

describe('formatDay', () => {
  // A Wednesday afternoon.
  const now = new Date(2026, 11, 9, 15, 0).getTime();
  const at = (y: number, m: number, d: number, h = 10) => new Date(y, m, d, h).getTime();

  it('says today and yesterday', () => {
    setLanguage('ru');
    expect(formatDay(at(2026, 11, 9, 0), now)).toBe('Сегодня');
    expect(formatDay(at(2026, 11, 9, 23), now)).toBe('Сегодня');
    expect(formatDay(at(2026, 11, 8, 23), now)).toBe('Вчера');
    setLanguage('en');
    expect(formatDay(at(2026, 11, 9), now)).toBe('Today');
    expect(formatDay(at(2026, 11, 8, 0), now)).toBe('Yesterday');
  });

  it('names the weekday within the last week, capitalised', () => {
    setLanguage('ru');
    expect(formatDay(at(2026, 11, 7), now)).toBe('Понедельник');
    expect(formatDay(at(2026, 11, 3), now)).toBe('Четверг');
    setLanguage('en');
    expect(formatDay(at(2026, 11, 7), now, 'en-US')).toBe('Monday');
  });

  it('gives the day and month this year, with the year before it', () => {
    setLanguage('ru');
    expect(formatDay(at(2026, 11, 2), now)).toBe('2 декабря');
    expect(formatDay(at(2026, 0, 5), now)).toBe('5 января');
    expect(formatDay(at(2025, 11, 31), now)).toBe('31 декабря 2025 г.');
    setLanguage('en');
    expect(formatDay(at(2026, 0, 5), now, 'en-US')).toBe('January 5');
    expect(formatDay(at(2026, 0, 5), now, 'en-GB')).toBe('5 January');
    expect(formatDay(at(2025, 11, 31), now, 'en-US')).toBe('December 31, 2025');
  });

  it('counts calendar days across a daylight-saving change', () => {
    setLanguage('en');
    // 23- and 25-hour days (Berlin switches clocks on 29.03 and 25.10.2026) still count as one day each.
    const tz = process.env.TZ;
    process.env.TZ = 'Europe/Berlin';
    onTestFinished(() => {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    });
    expect(new Date(2026, 2, 30, 12).getTimezoneOffset()).not.toBe(new Date(2026, 2, 28, 12).getTimezoneOffset());
    const spring = new Date(2026, 2, 30, 12).getTime();
    expect(formatDay(new Date(2026, 2, 29, 1).getTime(), spring)).toBe('Yesterday');
    const autumn = new Date(2026, 9, 26, 0, 30).getTime();
    expect(formatDay(new Date(2026, 9, 25, 23, 30).getTime(), autumn)).toBe('Yesterday');
  });
});

describe('formatSize', () => {
  it('uses the language\'s units and decimal mark', () => {
    setLanguage('ru');
    expect(formatSize(512)).toBe('512 Б');
    expect(formatSize(1536)).toBe('1,5 КБ');
    expect(formatSize(20 << 20)).toBe('20 МБ');
    setLanguage('en');
    expect(formatSize(1536)).toBe('1.5 KB');
  });
});
