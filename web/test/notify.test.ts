import { describe, expect, test } from 'vitest';
import { decide, levelAllows, SOUND_GAP_MS, type NotifyInput } from '../src/notify/decide';

const base: NotifyInput = {
  kind: 'dialog',
  level: 'default',
  now: 100_000,
  mention: false,
  own: false,
  choice: 'auto',
  focused: false,
  open: false,
  soundOn: true,
  desktopOn: true,
  lastSoundAt: 0,
};

describe('notification levels', () => {
  test('default: every message in dialogs and objects, mentions in groups', () => {
    expect(levelAllows('dialog', 'default', false)).toBe(true);
    expect(levelAllows('object', 'default', false)).toBe(true);
    expect(levelAllows('group', 'default', false)).toBe(false);
    expect(levelAllows('group', 'default', true)).toBe(true);
  });
  test('all, mentions, none', () => {
    expect(levelAllows('group', 'all', false)).toBe(true);
    expect(levelAllows('dialog', 'mentions', false)).toBe(false);
    expect(levelAllows('dialog', 'mentions', true)).toBe(true);
    expect(levelAllows('dialog', 'none', true)).toBe(false);
  });
});

describe('level × DND × focus', () => {
  const cases: [string, Partial<NotifyInput>, { sound: boolean; desktop: boolean }][] = [
    ['a hidden tab: chime and desktop', {}, { sound: true, desktop: true }],
    ['my own message: nothing', { own: true }, { sound: false, desktop: false }],
    ['level none: nothing', { level: 'none' }, { sound: false, desktop: false }],
    ['muted until later: nothing', { mutedUntil: 200_000 }, { sound: false, desktop: false }],
    ['a mute that ended: as usual', { mutedUntil: 50_000 }, { sound: true, desktop: true }],
    ['DND: nothing, even for a mention', { choice: 'dnd', mention: true, level: 'all' }, { sound: false, desktop: false }],
    ['away: still notified', { choice: 'away' }, { sound: true, desktop: true }],
    ['invisible: still notified', { choice: 'invisible' }, { sound: true, desktop: true }],
    ['focused on this discussion: nothing', { focused: true, open: true }, { sound: false, desktop: false }],
    ['focused on another: chime, no desktop', { focused: true, open: false }, { sound: true, desktop: false }],
    ['this discussion open, tab hidden: both', { focused: false, open: true }, { sound: true, desktop: true }],
    ['group without mention: nothing', { kind: 'group' }, { sound: false, desktop: false }],
    ['group with mention: both', { kind: 'group', mention: true }, { sound: true, desktop: true }],
    ['mentions level in a dialog, no mention', { level: 'mentions' }, { sound: false, desktop: false }],
    ['sound off: desktop only', { soundOn: false }, { sound: false, desktop: true }],
    ['desktop off: chime only', { desktopOn: false }, { sound: true, desktop: false }],
    ['chimed just now: no second chime', { lastSoundAt: 100_000 - SOUND_GAP_MS + 1 }, { sound: false, desktop: true }],
    ['chimed 2 s ago: chime again', { lastSoundAt: 100_000 - SOUND_GAP_MS }, { sound: true, desktop: true }],
  ];
  for (const [name, change, want] of cases) {
    test(name, () => expect(decide({ ...base, ...change })).toEqual(want));
  }
});
