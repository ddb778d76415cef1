import { afterEach, describe, expect, it } from 'vitest';
import type { DiscussionInfo } from '../src/api';
import { dialogPeer, filterDiscussions, typingText } from '../src/components/DiscussionList';
import { setLanguage } from '../src/i18n';

function d(id: string, kind: DiscussionInfo['kind'], title: string, members: string[] = []): DiscussionInfo {
  return {
    id,
    kind,
    title,
    object: null,
    members: members.map((user) => ({ user, role: 'member' as const })),
    last_seq: 1,
    last_activity_at: 1,
    read_seq: 0,
    unread: 0,
    mentions: 0,
    following: true,
  };
}

const list = [
  d('1', 'dialog', '', ['anna@hq', 'boris@hq']),
  d('2', 'group', 'Бухгалтерия 2026'),
  d('3', 'group', 'Склад'),
];

afterEach(() => setLanguage('en'));

describe('the discussion filter', () => {
  it('matches every word, in any case, against the shown name', () => {
    expect(filterDiscussions(list, 'БУХ 2026', 'anna@hq').map((x) => x.id)).toEqual(['2']);
    expect(filterDiscussions(list, 'bor', 'anna@hq').map((x) => x.id)).toEqual(['1']);
    expect(filterDiscussions(list, '  ', 'anna@hq')).toBe(list);
    expect(filterDiscussions(list, 'нет такого', 'anna@hq')).toEqual([]);
  });

  it('names the other member of a dialog', () => {
    expect(dialogPeer(list[0], 'anna@hq')).toBe('boris@hq');
    expect(dialogPeer(list[1], 'anna@hq')).toBeNull();
  });
});

describe('the typing line', () => {
  it('names one person, counts several with Russian plurals', () => {
    setLanguage('ru');
    expect(typingText([])).toBe('');
    expect(typingText(['boris@hq'])).toBe('boris печатает…');
    const n = (k: number) => typingText(Array.from({ length: k }, (_, i) => `u${i}@hq`));
    expect(n(2)).toBe('2 человека печатают…');
    expect(n(5)).toBe('5 человек печатают…');
    expect(n(21)).toBe('21 человек печатает…');
    expect(n(22)).toBe('22 человека печатают…');
    expect(n(111)).toBe('111 человек печатают…');
  });

  it('in English', () => {
    expect(typingText(['boris@hq', 'carol@hq'])).toBe('2 people are typing…');
  });
});
