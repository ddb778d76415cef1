// Composer completion: `@login` over the discussion's members and
// `:shortcode:` over the emoji data. Pure functions over the text and caret.

export interface Token {
  kind: 'mention' | 'emoji';
  /** What was typed after `@` or `:`. */
  query: string;
  /** Where the token (its `@`/`:`) starts in the text. */
  start: number;
  /** The caret: the token ends here. */
  end: number;
}

/** The emoji data as the node serves it (`/emoji/{lang}.json`, trimmed at build). */
export interface EmojiEntry {
  /** The emoji itself. */
  e: string;
  /** Shortcodes, without colons. */
  s: string[];
  /** Its name in the language. */
  a: string;
  /** Search words. */
  t?: string[];
  /** Group (for the picker's order). */
  g?: number;
}

const MENTION_RE = /(?:^|[\s(])@([a-z0-9][a-z0-9._-]*)?$/;
const EMOJI_RE = /(?:^|[\s(]):([\p{Ll}\p{N}_+-]{2,})$/u;

/** The completable token ending at the caret, if any. */
export function tokenAt(text: string, caret: number): Token | null {
  const before = text.slice(0, caret);
  const mention = MENTION_RE.exec(before);
  if (mention) {
    const query = mention[1] ?? '';
    return { kind: 'mention', query, start: caret - query.length - 1, end: caret };
  }
  const emoji = EMOJI_RE.exec(before);
  if (emoji) {
    const query = emoji[1];
    return { kind: 'emoji', query, start: caret - query.length - 1, end: caret };
  }
  return null;
}

export interface MentionCandidate {
  /** What goes after `@`: the login, or `login@node` for a user of another node. */
  login: string;
  /** The user id. */
  user: string;
}

/**
 * Members whose login starts with (then contains) the query, the caller left
 * out, at most `limit`.
 */
export function mentionCandidates(members: string[], query: string, me: string | undefined, myNode: string, limit = 8): MentionCandidate[] {
  const q = query.toLowerCase();
  const all = members
    .filter((u) => u !== me)
    .map((user) => {
      const [login, node] = user.split('@');
      return { user, login: node && node !== myNode ? user : login };
    });
  const starts = all.filter((c) => c.login.startsWith(q));
  const contains = all.filter((c) => !c.login.startsWith(q) && c.login.includes(q));
  return [...starts.sort(byLogin), ...contains.sort(byLogin)].slice(0, limit);
}

function byLogin(a: MentionCandidate, b: MentionCandidate): number {
  return a.login < b.login ? -1 : a.login > b.login ? 1 : 0;
}

/**
 * Emoji whose shortcode starts with the query first, then those whose
 * shortcode, name or words contain it; in the data's order within each.
 */
export function emojiCandidates(data: EmojiEntry[], query: string, limit = 8): EmojiEntry[] {
  const q = query.toLowerCase();
  if (!q) return data.slice(0, limit);
  const starts: EmojiEntry[] = [];
  const contains: EmojiEntry[] = [];
  for (const entry of data) {
    if (entry.s.some((s) => s.startsWith(q))) starts.push(entry);
    else if (entry.s.some((s) => s.includes(q)) || entry.a.toLowerCase().includes(q) || entry.t?.some((w) => w.startsWith(q)))
      contains.push(entry);
    if (starts.length >= limit) break;
  }
  return [...starts, ...contains].slice(0, limit);
}

/** Replaces the token with `insert` and a space; returns the new text and caret. */
export function applyCompletion(text: string, token: Token, insert: string): { text: string; caret: number } {
  const after = text.slice(token.end);
  const spaced = after.startsWith(' ') ? insert : `${insert} `;
  const next = text.slice(0, token.start) + spaced + after;
  return { text: next, caret: token.start + spaced.length + (after.startsWith(' ') ? 1 : 0) };
}
