// The node's snippets are HTML-escaped text with the matches in `<b>…</b>`.
// They are split into parts here and rendered as text nodes: never parsed as
// HTML, so anything else that looks like a tag stays visible text.

export interface SnippetPart {
  text: string;
  match: boolean;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

/** Undoes the node's escaping (named and numeric entities); unknown ones stay as they are. */
export function unescapeHtml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

export function snippetParts(snippet: string): SnippetPart[] {
  const parts: SnippetPart[] = [];
  const re = /<b>([\s\S]*?)<\/b>/g;
  let at = 0;
  for (let m = re.exec(snippet); m; m = re.exec(snippet)) {
    if (m.index > at) parts.push({ text: unescapeHtml(snippet.slice(at, m.index)), match: false });
    if (m[1] !== '') parts.push({ text: unescapeHtml(m[1]), match: true });
    at = m.index + m[0].length;
  }
  if (at < snippet.length) parts.push({ text: unescapeHtml(snippet.slice(at)), match: false });
  return parts;
}

/** Hits grouped by discussion, groups in the order of their best hit. */
export function groupHits<T extends { discussion: string }>(hits: T[]): { discussion: string; hits: T[] }[] {
  const groups = new Map<string, T[]>();
  for (const h of hits) {
    const g = groups.get(h.discussion);
    if (g) g.push(h);
    else groups.set(h.discussion, [h]);
  }
  return [...groups].map(([discussion, list]) => ({ discussion, hits: list }));
}
