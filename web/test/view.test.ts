import { describe, expect, it } from 'vitest';
import { buildRows, readTarget, textSegments } from '../src/chat/view';
import { msg } from './chat-fixtures';

describe('buildRows', () => {
  it('puts a day separator before the first message of each local day', () => {
    const day1 = new Date(2026, 11, 6, 23, 50).getTime();
    const day2 = new Date(2026, 11, 7, 0, 10).getTime();
    const rows = buildRows([msg(1, 'a', { created_at: day1 }), msg(2, 'b', { created_at: day1 + 60_000 }), msg(3, 'c', { created_at: day2 })]);
    expect(rows.map((r) => (r.kind === 'day' ? r.key : r.message.text))).toEqual(['day-2026-12-06', 'a', 'b', 'day-2026-12-07', 'c']);
  });

  it('has no rows for no messages', () => {
    expect(buildRows([])).toEqual([]);
  });
});

describe('textSegments', () => {
  it('marks the mentions the node recognised, mine apart', () => {
    expect(textSegments('@anna и @boris, посмотрите', ['anna@hq', 'boris@hq'], 'boris@hq')).toEqual([
      { text: '@anna', mention: 'other' },
      { text: ' и ' },
      { text: '@boris', mention: 'me' },
      { text: ', посмотрите' },
    ]);
  });

  it('leaves other @words and e-mail-like text alone', () => {
    expect(textSegments('@nobody writes to @anna.', ['anna@hq'], 'boris@hq')).toEqual([
      { text: '@nobody writes to ' },
      { text: '@anna', mention: 'other' },
      { text: '.' },
    ]);
  });

  it('recognises a user of another node by login@node', () => {
    expect(textSegments('cc @ivan@branch', ['ivan@branch'], 'anna@hq')).toEqual([
      { text: 'cc ' },
      { text: '@ivan@branch', mention: 'other' },
    ]);
  });

  it('keeps markup as plain text', () => {
    expect(textSegments('<script>alert(1)</script> @anna', ['anna@hq'], undefined)).toEqual([
      { text: '<script>alert(1)</script> ' },
      { text: '@anna', mention: 'other' },
    ]);
  });
});

describe('readTarget', () => {
  const messages = [msg(3, 'a'), msg(5, 'b'), msg(8, 'c')];

  it('moves nothing while the page is hidden, whatever is on screen', () => {
    expect(readTarget([3, 5, 8], messages, 10, false)).toBeNull();
  });

  it('moves nothing when no message is on screen', () => {
    expect(readTarget([], messages, 10, true)).toBeNull();
  });

  it('stops at the newest message on screen', () => {
    expect(readTarget(new Set([3, 5]), messages, 10, true)).toBe(5);
  });

  it('covers the events after the newest message once it is on screen', () => {
    expect(readTarget([5, 8], messages, 10, true)).toBe(10);
  });
});
