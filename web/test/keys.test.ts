import { describe, expect, it } from 'vitest';
import {
  composerAction,
  globalAction,
  isTextField,
  keyLabel,
  listMove,
  messageAction,
  moveIndex,
  stepDiscussion,
  type KeyLike,
} from '../src/keys';

/** A key press: `key` and `code` as a US layout gives them, plus modifiers. */
function press(key: string, mods: Partial<KeyLike> = {}): KeyLike {
  const code = /^[a-z]$/i.test(key) ? `Key${key.toUpperCase()}` : key === '/' ? 'Slash' : key;
  return { key, code, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false, ...mods };
}

describe('globalAction', () => {
  it('moves between discussions with Alt+arrows, unread ones with Shift', () => {
    expect(globalAction(press('ArrowDown', { altKey: true }), true)).toBe('next');
    expect(globalAction(press('ArrowUp', { altKey: true }), false)).toBe('prev');
    expect(globalAction(press('ArrowDown', { altKey: true, shiftKey: true }), true)).toBe('next_unread');
    expect(globalAction(press('ArrowUp', { altKey: true, shiftKey: true }), true)).toBe('prev_unread');
    // Plain and Ctrl+Alt arrows are not ours.
    expect(globalAction(press('ArrowDown'), false)).toBeNull();
    expect(globalAction(press('ArrowDown', { altKey: true, ctrlKey: true }), false)).toBeNull();
  });

  it('opens the switcher, search and help', () => {
    expect(globalAction(press('k', { ctrlKey: true }), true)).toBe('switcher');
    expect(globalAction(press('k', { metaKey: true }), true)).toBe('switcher');
    expect(globalAction(press('F', { ctrlKey: true, shiftKey: true }), true)).toBe('search');
    expect(globalAction(press('/', { ctrlKey: true }), true)).toBe('help');
    expect(globalAction(press('?', { shiftKey: true }), false)).toBe('help');
  });

  it('works on a Russian layout by the physical key', () => {
    expect(globalAction({ ...press('л', { ctrlKey: true }), code: 'KeyK' }, true)).toBe('switcher');
    expect(globalAction({ ...press('А', { ctrlKey: true, shiftKey: true }), code: 'KeyF' }, true)).toBe('search');
    expect(globalAction({ ...press('.', { ctrlKey: true }), code: 'Slash' }, true)).toBe('help');
  });

  it('leaves text, the browser and IME composition alone', () => {
    // ? is text in a field.
    expect(globalAction(press('?', { shiftKey: true }), true)).toBeNull();
    expect(globalAction(press('k'), false)).toBeNull();
    // Ctrl+Shift+K and Ctrl+Alt+K are not the switcher; Ctrl+R stays with the browser.
    expect(globalAction(press('k', { ctrlKey: true, shiftKey: true }), false)).toBeNull();
    expect(globalAction(press('k', { ctrlKey: true, altKey: true }), false)).toBeNull();
    expect(globalAction(press('r', { ctrlKey: true }), false)).toBeNull();
    expect(globalAction({ ...press('k', { ctrlKey: true }), isComposing: true }, true)).toBeNull();
  });
});

describe('isTextField', () => {
  it('tells text fields from buttons and boxes', () => {
    const el = (html: string) => {
      const div = document.createElement('div');
      div.innerHTML = html;
      return div.firstElementChild;
    };
    expect(isTextField(el('<textarea></textarea>'))).toBe(true);
    expect(isTextField(el('<input type="text">'))).toBe(true);
    expect(isTextField(el('<input type="search">'))).toBe(true);
    expect(isTextField(el('<input>'))).toBe(true);
    expect(isTextField(el('<input type="checkbox">'))).toBe(false);
    expect(isTextField(el('<button>x</button>'))).toBe(false);
    expect(isTextField(null)).toBe(false);
  });
});

describe('stepDiscussion', () => {
  const list = [
    { id: 'a', unread: 0 },
    { id: 'b', unread: 2 },
    { id: 'c', unread: 0 },
    { id: 'd', unread: 1 },
  ];

  it('steps up and down, wrapping around', () => {
    expect(stepDiscussion(list, 'a', 1, false)).toBe('b');
    expect(stepDiscussion(list, 'b', -1, false)).toBe('a');
    expect(stepDiscussion(list, 'd', 1, false)).toBe('a');
    expect(stepDiscussion(list, 'a', -1, false)).toBe('d');
  });

  it('starts at the top (down) or the bottom (up) when none is open', () => {
    expect(stepDiscussion(list, null, 1, false)).toBe('a');
    expect(stepDiscussion(list, null, -1, false)).toBe('d');
    expect(stepDiscussion(list, 'gone', 1, false)).toBe('a');
  });

  it('skips read discussions with unreadOnly', () => {
    expect(stepDiscussion(list, 'a', 1, true)).toBe('b');
    expect(stepDiscussion(list, 'b', 1, true)).toBe('d');
    expect(stepDiscussion(list, 'd', 1, true)).toBe('b');
    expect(stepDiscussion(list, 'b', -1, true)).toBe('d');
    expect(stepDiscussion(list, null, -1, true)).toBe('d');
  });

  it('has nowhere to go when nothing else qualifies', () => {
    expect(stepDiscussion([], null, 1, false)).toBeNull();
    expect(stepDiscussion([{ id: 'a', unread: 0 }], 'a', 1, false)).toBeNull();
    expect(stepDiscussion([{ id: 'a', unread: 3 }, { id: 'b', unread: 0 }], 'a', 1, true)).toBeNull();
    expect(stepDiscussion([{ id: 'a', unread: 0 }], null, 1, true)).toBeNull();
  });
});

describe('composerAction', () => {
  it('edits my last message on ↑ only in an empty box', () => {
    expect(composerAction(press('ArrowUp'), true)).toBe('edit_last');
    expect(composerAction(press('ArrowUp'), false)).toBeNull();
    expect(composerAction(press('ArrowDown'), true)).toBeNull();
    expect(composerAction(press('ArrowUp', { shiftKey: true }), true)).toBeNull();
    expect(composerAction(press('ArrowUp', { altKey: true }), true)).toBeNull();
    expect(composerAction({ ...press('ArrowUp'), isComposing: true }, true)).toBeNull();
  });

  it('replies to the last message on Ctrl+↑, with or without text', () => {
    expect(composerAction(press('ArrowUp', { ctrlKey: true }), true)).toBe('reply_last');
    expect(composerAction(press('ArrowUp', { ctrlKey: true }), false)).toBe('reply_last');
    expect(composerAction(press('ArrowUp', { metaKey: true }), false)).toBe('reply_last');
  });
});

describe('messageAction', () => {
  it('moves and acts on the chosen message', () => {
    expect(messageAction(press('ArrowUp'))).toBe('up');
    expect(messageAction(press('ArrowDown'))).toBe('down');
    expect(messageAction(press('Home'))).toBe('first');
    expect(messageAction(press('End'))).toBe('last');
    expect(messageAction(press('r'))).toBe('reply');
    expect(messageAction(press('e'))).toBe('edit');
    expect(messageAction(press('Delete'))).toBe('delete');
    expect(messageAction(press('Escape'))).toBe('composer');
  });

  it('takes R and E by the physical key on a Russian layout', () => {
    expect(messageAction({ ...press('к'), code: 'KeyR' })).toBe('reply');
    expect(messageAction({ ...press('у'), code: 'KeyE' })).toBe('edit');
  });

  it('leaves Ctrl+R, Ctrl+E and other keys to the browser', () => {
    expect(messageAction(press('r', { ctrlKey: true }))).toBeNull();
    expect(messageAction(press('e', { ctrlKey: true }))).toBeNull();
    expect(messageAction(press('R', { shiftKey: true }))).toBeNull();
    expect(messageAction(press('x'))).toBeNull();
    expect(messageAction(press('ArrowUp', { altKey: true }))).toBeNull();
  });
});

describe('lists', () => {
  it('moves without wrapping', () => {
    expect(listMove(press('ArrowDown'))).toBe('down');
    expect(listMove(press('ArrowDown', { altKey: true }))).toBeNull();
    expect(moveIndex(0, 3, 'up')).toBe(0);
    expect(moveIndex(0, 3, 'down')).toBe(1);
    expect(moveIndex(2, 3, 'down')).toBe(2);
    expect(moveIndex(1, 3, 'first')).toBe(0);
    expect(moveIndex(1, 3, 'last')).toBe(2);
    expect(moveIndex(-1, 3, 'down')).toBe(0);
    expect(moveIndex(0, 0, 'down')).toBe(-1);
  });

  it('writes Ctrl as ⌘ on a Mac', () => {
    expect(keyLabel('Ctrl+K', true)).toBe('⌘+K');
    expect(keyLabel('Alt+Shift+↓', true)).toBe('⌥+Shift+↓');
    expect(keyLabel('Ctrl+K', false)).toBe('Ctrl+K');
  });
});
