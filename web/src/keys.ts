// Keyboard shortcuts: which key press means what, as pure functions (the
// components attach them). Letters are matched by `code` as well as `key`, so
// they work on a Russian layout (Ctrl+K there gives `key` "л").

export type KeyLike = Pick<KeyboardEvent, 'key' | 'code' | 'ctrlKey' | 'metaKey' | 'altKey' | 'shiftKey'> & {
  isComposing?: boolean;
  repeat?: boolean;
};

/** Shortcuts that work anywhere in the signed-in app. */
export type GlobalAction = 'prev' | 'next' | 'prev_unread' | 'next_unread' | 'switcher' | 'search' | 'help';

function letter(e: KeyLike, name: string): boolean {
  return e.key.toLowerCase() === name || e.code === `Key${name.toUpperCase()}`;
}

/** Ctrl (or ⌘ on a Mac) without Alt. */
function ctrl(e: KeyLike): boolean {
  return (e.ctrlKey || e.metaKey) && !e.altKey;
}

/**
 * The app-wide action for a key press, or null. `inText` is whether focus is
 * in a text field, where a bare `?` is text.
 */
export function globalAction(e: KeyLike, inText: boolean): GlobalAction | null {
  if (e.isComposing) return null;
  if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
    const down = e.key === 'ArrowDown';
    if (e.shiftKey) return down ? 'next_unread' : 'prev_unread';
    return down ? 'next' : 'prev';
  }
  if (ctrl(e) && !e.shiftKey && letter(e, 'k')) return 'switcher';
  if (ctrl(e) && e.shiftKey && letter(e, 'f')) return 'search';
  if (ctrl(e) && (e.key === '/' || e.code === 'Slash')) return 'help';
  if (!inText && e.key === '?' && !e.ctrlKey && !e.metaKey && !e.altKey) return 'help';
  return null;
}

/** Whether an element takes typed text (so bare letters and `?` belong to it). */
export function isTextField(el: Element | null): boolean {
  if (!el) return false;
  const tag = el.tagName;
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag === 'INPUT') {
    const type = (el as HTMLInputElement).type;
    return !['button', 'checkbox', 'radio', 'submit', 'reset', 'file', 'range', 'color'].includes(type);
  }
  return (el as HTMLElement).isContentEditable === true;
}

/**
 * The discussion to move to from `current` in `list` (in the list's order),
 * by `step` (-1 up, +1 down); `unreadOnly` skips read ones. Wraps around; null
 * when there is nowhere to go.
 */
export function stepDiscussion<D extends { id: string; unread: number }>(
  list: D[],
  current: string | null,
  step: 1 | -1,
  unreadOnly: boolean,
): string | null {
  const n = list.length;
  if (n === 0) return null;
  const at = current === null ? -1 : list.findIndex((d) => d.id === current);
  // From nowhere, down starts at the top and up at the bottom.
  let i = at < 0 ? (step > 0 ? -1 : n) : at;
  for (let k = 0; k < n; k += 1) {
    i = (i + step + n) % n;
    const d = list[i];
    if (d.id === current) return null;
    if (!unreadOnly || d.unread > 0) return d.id;
  }
  return null;
}

/** Keys in the message box. */
export type ComposerAction = 'edit_last' | 'reply_last';

/** ↑ in an empty box edits my last message; Ctrl+↑ replies to the last message. */
export function composerAction(e: KeyLike, empty: boolean): ComposerAction | null {
  if (e.isComposing || e.key !== 'ArrowUp' || e.altKey || e.shiftKey) return null;
  if (ctrl(e)) return 'reply_last';
  if (!e.ctrlKey && !e.metaKey && empty) return 'edit_last';
  return null;
}

/** Keys on a chosen message in the message list. */
export type MessageAction = 'up' | 'down' | 'first' | 'last' | 'reply' | 'edit' | 'delete' | 'composer';

export function messageAction(e: KeyLike): MessageAction | null {
  if (e.isComposing || e.altKey || e.ctrlKey || e.metaKey) return null;
  switch (e.key) {
    case 'ArrowUp':
      return 'up';
    case 'ArrowDown':
      return 'down';
    case 'Home':
      return 'first';
    case 'End':
      return 'last';
    case 'Delete':
      return 'delete';
    case 'Escape':
      return 'composer';
  }
  if (e.shiftKey) return null;
  if (letter(e, 'r')) return 'reply';
  if (letter(e, 'e')) return 'edit';
  return null;
}

/** Keys in a list with roving focus (the discussion list, the quick switcher). */
export type ListMove = 'up' | 'down' | 'first' | 'last';

export function listMove(e: KeyLike): ListMove | null {
  if (e.isComposing || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return null;
  switch (e.key) {
    case 'ArrowUp':
      return 'up';
    case 'ArrowDown':
      return 'down';
    case 'Home':
      return 'first';
    case 'End':
      return 'last';
  }
  return null;
}

/** The index after a move in a list of `n` items (clamped, no wrap). */
export function moveIndex(at: number, n: number, move: ListMove): number {
  if (n === 0) return -1;
  switch (move) {
    case 'up':
      return Math.max(0, at - 1);
    case 'down':
      return Math.min(n - 1, at + 1);
    case 'first':
      return 0;
    case 'last':
      return n - 1;
  }
}

/** How a shortcut is written in the help: Ctrl on other systems, ⌘ on a Mac. */
export function keyLabel(keys: string, mac: boolean): string {
  return mac ? keys.replace(/Ctrl/g, '⌘').replace(/Alt/g, '⌥') : keys;
}
