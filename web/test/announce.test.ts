import { afterEach, describe, expect, it } from 'vitest';
import { Announcer, announcementText, type Timers } from '../src/chat/announce';
import { setLanguage } from '../src/i18n';

afterEach(() => setLanguage('en'));

/** Timers the test fires by hand. */
function manualTimers() {
  const pending = new Map<number, () => void>();
  let next = 1;
  const timers: Timers = {
    set: (fn) => {
      pending.set(next, fn);
      return next++;
    },
    clear: (h) => pending.delete(h as number),
  };
  return {
    timers,
    count: () => pending.size,
    fire() {
      const all = [...pending.values()];
      pending.clear();
      for (const fn of all) fn();
    },
  };
}

describe('announcementText', () => {
  it('says author and text, one line per message', () => {
    setLanguage('ru');
    expect(announcementText([{ author: 'anna', text: 'Привет', files: 0 }], 'Счёт 42')).toBe('anna: Привет');
    expect(
      announcementText(
        [
          { author: 'anna', text: 'один', files: 0 },
          { author: 'boris', text: '  два\n\nстроки ', files: 2 },
        ],
        'x',
      ),
    ).toBe('anna: один\nboris: два строки · 2 файла');
    expect(announcementText([{ author: 'anna', text: '', files: 1 }], 'x')).toBe('anna: 1 файл');
  });

  it('cuts long texts', () => {
    const text = announcementText([{ author: 'anna', text: 'я'.repeat(500), files: 0 }], 'x');
    expect(text.length).toBeLessThan(220);
    expect(text.endsWith('…')).toBe(true);
  });

  it('sums up more than three, with the newest', () => {
    setLanguage('ru');
    const five = ['1', '2', '3', '4', '5'].map((text) => ({ author: 'anna', text, files: 0 }));
    expect(announcementText(five, 'Счёт 42')).toBe('5 новых сообщений в «Счёт 42». anna: 5');
    setLanguage('en');
    expect(announcementText(five.slice(0, 4), 'Invoice 42')).toBe('4 new messages in Invoice 42. anna: 4');
    expect(announcementText([], 'x')).toBe('');
  });
});

describe('Announcer', () => {
  it('says what arrived within one window, once', () => {
    const said: string[] = [];
    const clock = manualTimers();
    const a = new Announcer((t) => said.push(t), 1000, clock.timers);
    a.push('d1', { author: 'anna', text: 'one', files: 0 });
    a.push('d1', { author: 'boris', text: 'two', files: 0 });
    expect(clock.count()).toBe(1);
    expect(said).toEqual([]);
    clock.fire();
    expect(said).toEqual(['anna: one\nboris: two']);
    // The next arrival opens a new window.
    a.push('d1', { author: 'anna', text: 'three', files: 0 });
    clock.fire();
    expect(said).toEqual(['anna: one\nboris: two', 'anna: three']);
  });

  it('does not flood: a burst becomes one summary', () => {
    const said: string[] = [];
    const clock = manualTimers();
    const a = new Announcer((t) => said.push(t), 1000, clock.timers);
    for (let i = 1; i <= 30; i += 1) a.push('d1', { author: 'bot', text: `line ${i}`, files: 0 });
    clock.fire();
    expect(said).toEqual(['30 new messages in d1. bot: line 30']);
  });

  it('forgets the old discussion when another is opened, and everything on stop', () => {
    const said: string[] = [];
    const clock = manualTimers();
    const a = new Announcer((t) => said.push(t), 1000, clock.timers);
    a.push('d1', { author: 'anna', text: 'old', files: 0 });
    a.push('d2', { author: 'boris', text: 'new', files: 0 });
    clock.fire();
    expect(said).toEqual(['boris: new']);
    a.push('d2', { author: 'boris', text: 'late', files: 0 });
    a.stop();
    expect(clock.count()).toBe(0);
    clock.fire();
    expect(said).toEqual(['boris: new']);
  });
});
