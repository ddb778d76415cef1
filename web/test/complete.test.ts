import { describe, expect, it } from 'vitest';
import { applyCompletion, emojiCandidates, mentionCandidates, tokenAt, type EmojiEntry } from '../src/chat/complete';
import { isSendKey } from '../src/components/Composer';

const EMOJI: EmojiEntry[] = [
  { e: '😀', s: ['grinning'], a: 'grinning face', t: ['face', 'grin'] },
  { e: '😄', s: ['smile'], a: 'grinning face with smiling eyes' },
  { e: '🙂', s: ['slightly_smiling_face'], a: 'slightly smiling face' },
  { e: '🎉', s: ['tada', 'ura'], a: 'хлопушка', t: ['праздник'] },
];

describe('tokenAt', () => {
  it('finds an @mention being typed at the caret', () => {
    expect(tokenAt('Привет, @bo', 11)).toEqual({ kind: 'mention', query: 'bo', start: 8, end: 11 });
    expect(tokenAt('@', 1)).toEqual({ kind: 'mention', query: '', start: 0, end: 1 });
  });

  it('ignores an @ inside a word (an e-mail address) and a finished mention', () => {
    expect(tokenAt('mail anna@hq', 12)).toBeNull();
    expect(tokenAt('@boris ', 7)).toBeNull();
  });

  it('finds a :shortcode of two or more characters, in Latin or Cyrillic', () => {
    expect(tokenAt('ура :ta', 7)).toEqual({ kind: 'emoji', query: 'ta', start: 4, end: 7 });
    expect(tokenAt(':праз', 5)).toEqual({ kind: 'emoji', query: 'праз', start: 0, end: 5 });
    expect(tokenAt('время 10:30', 11)).toBeNull();
    expect(tokenAt(':t', 2)).toBeNull();
  });

  it('looks only before the caret', () => {
    expect(tokenAt('@bo and more', 3)).toEqual({ kind: 'mention', query: 'bo', start: 0, end: 3 });
  });
});

describe('mentionCandidates', () => {
  const members = ['anna@hq', 'boris@hq', 'bob@hq', 'abbot@hq', 'boris@branch'];

  it('offers members by login prefix first, then by containment, leaving me out', () => {
    expect(mentionCandidates(members, 'bo', 'anna@hq', 'hq').map((c) => c.login)).toEqual([
      'bob',
      'boris',
      'boris@branch',
      'abbot',
    ]);
    expect(mentionCandidates(members, '', 'anna@hq', 'hq')).toHaveLength(4);
  });

  it('names users of another node with their node', () => {
    expect(mentionCandidates(members, 'boris@', 'anna@hq', 'hq')).toEqual([{ login: 'boris@branch', user: 'boris@branch' }]);
  });
});

describe('emojiCandidates', () => {
  it('puts shortcode prefixes first, then names and words', () => {
    expect(emojiCandidates(EMOJI, 'smil').map((e) => e.e)).toEqual(['😄', '🙂']);
    expect(emojiCandidates(EMOJI, 'grin').map((e) => e.e)).toEqual(['😀', '😄']);
    expect(emojiCandidates(EMOJI, 'празд').map((e) => e.e)).toEqual(['🎉']);
    expect(emojiCandidates(EMOJI, 'хлоп').map((e) => e.e)).toEqual(['🎉']);
    expect(emojiCandidates(EMOJI, 'ur').map((e) => e.e)).toEqual(['🎉']);
    expect(emojiCandidates(EMOJI, 'zzz')).toEqual([]);
  });

  it('respects the limit', () => {
    expect(emojiCandidates(EMOJI, '', 2)).toHaveLength(2);
  });
});

describe('applyCompletion', () => {
  it('replaces the token and adds a space', () => {
    const text = 'Привет, @bo';
    const r = applyCompletion(text, tokenAt(text, 11)!, '@boris');
    expect(r).toEqual({ text: 'Привет, @boris ', caret: 15 });
  });

  it('keeps the text after the caret and does not double a space', () => {
    const text = 'a :ta b';
    const r = applyCompletion(text, tokenAt(text, 5)!, '🎉');
    expect(r.text).toBe('a 🎉 b');
    expect(r.caret).toBe(2 + '🎉'.length + 1);
  });
});

describe('isSendKey', () => {
  const key = (k: Partial<KeyboardEvent>) => ({
    key: 'Enter',
    shiftKey: false,
    ctrlKey: false,
    metaKey: false,
    altKey: false,
    isComposing: false,
    keyCode: 13,
    ...k,
  });

  it('Enter sends, Shift+Enter does not (send key: Enter)', () => {
    expect(isSendKey(key({}), 'enter')).toBe(true);
    expect(isSendKey(key({ shiftKey: true }), 'enter')).toBe(false);
    expect(isSendKey(key({ key: 'a' }), 'enter')).toBe(false);
  });

  it('only Ctrl+Enter (or ⌘+Enter) sends with the Ctrl+Enter preference', () => {
    expect(isSendKey(key({}), 'ctrl_enter')).toBe(false);
    expect(isSendKey(key({ ctrlKey: true }), 'ctrl_enter')).toBe(true);
    expect(isSendKey(key({ metaKey: true }), 'ctrl_enter')).toBe(true);
  });

  it('never sends while an input method is composing', () => {
    expect(isSendKey(key({ isComposing: true }), 'enter')).toBe(false);
    expect(isSendKey(key({ keyCode: 229 }), 'enter')).toBe(false);
    expect(isSendKey(key({ isComposing: true, ctrlKey: true }), 'ctrl_enter')).toBe(false);
  });
});
