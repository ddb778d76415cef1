import { describe, expect, test } from 'vitest';
import { bounds, formatQuery, nextDay, parseDay, parseQuery } from '../src/search/query';
import { groupHits, snippetParts, unescapeHtml } from '../src/search/snippet';
import { render } from 'preact';

const NOW = new Date(2026, 11, 7, 12, 0);

describe('search query parser', () => {
  test('words without filters stay the query', () => {
    expect(parseQuery('счета за декабрь', NOW)).toEqual({ text: 'счета за декабрь', chips: [] });
  });

  test('filters become chips, the rest is the text', () => {
    const q = parseQuery('from:ivanov in:"Счёт 42" has:file after:2026-12-01 оплата', NOW);
    expect(q.text).toBe('оплата');
    expect(q.chips.map((c) => [c.kind, c.value])).toEqual([
      ['from', 'ivanov'],
      ['in', 'Счёт 42'],
      ['has', 'file'],
      ['after', '2026-12-01'],
    ]);
    expect(q.chips[3].day).toBe(new Date(2026, 11, 1).getTime());
  });

  test('Russian filter names and values', () => {
    const q = parseQuery('от:@petrova в:Бухгалтерия есть:файл до:07.12.2026 дата:01.12 акт', NOW);
    expect(q.text).toBe('акт');
    expect(q.chips.map((c) => c.kind)).toEqual(['from', 'in', 'has', 'before', 'on']);
    expect(q.chips[0].value).toBe('petrova');
    expect(q.chips[4].day).toBe(new Date(2026, 11, 1).getTime());
  });

  test('quoted phrases keep their quotes; an unclosed quote runs to the end', () => {
    expect(parseQuery('"акт сверки" 2026', NOW).text).toBe('"акт сверки" 2026');
    const q = parseQuery('in:"Счёт 42', NOW);
    expect(q.chips).toEqual([{ kind: 'in', value: 'Счёт 42' }]);
  });

  test('what only looks like a filter stays text', () => {
    expect(parseQuery('встреча в 12:30 after:вчера has:pdf from:', NOW)).toEqual({
      text: 'встреча в 12:30 after:вчера has:pdf from:',
      chips: [],
    });
  });

  test('dates: formats and invalid days', () => {
    expect(parseDay('2026-02-28', NOW)).toBe(new Date(2026, 1, 28).getTime());
    expect(parseDay('31.02.2026', NOW)).toBeNull();
    expect(parseDay('1.3.26', NOW)).toBe(new Date(2026, 2, 1).getTime());
    expect(parseDay('05.12', NOW)).toBe(new Date(2026, 11, 5).getTime());
    expect(parseDay('2026-13-01', NOW)).toBeNull();
  });

  test('date chips become bounds: after is exclusive of its day, before too, on is one day', () => {
    const d1 = new Date(2026, 11, 1).getTime();
    const d2 = new Date(2026, 11, 2).getTime();
    expect(nextDay(d1)).toBe(d2);
    expect(bounds(parseQuery('after:01.12.2026', NOW).chips)).toEqual({ from: d2, to: undefined });
    expect(bounds(parseQuery('before:01.12.2026', NOW).chips)).toEqual({ from: undefined, to: d1 });
    expect(bounds(parseQuery('on:01.12.2026', NOW).chips)).toEqual({ from: d1, to: d2 });
  });

  test('written back without one chip', () => {
    const q = parseQuery('в:"Счёт 42" от:ivanov оплата', NOW);
    expect(formatQuery({ ...q, chips: q.chips.slice(1) })).toBe('from:ivanov оплата');
    expect(formatQuery(q)).toBe('in:"Счёт 42" from:ivanov оплата');
    expect(parseQuery(formatQuery(q), NOW)).toEqual(q);
  });
});

describe('snippets', () => {
  test('split on <b>, entities undone', () => {
    expect(snippetParts('Оплата <b>счёта</b> &lt;42&gt; &amp; <b>акт</b>')).toEqual([
      { text: 'Оплата ', match: false },
      { text: 'счёта', match: true },
      { text: ' <42> & ', match: false },
      { text: 'акт', match: true },
    ]);
    expect(unescapeHtml('&#39;a&#x27; &quot;b&quot; &unknown;')).toBe(`'a' "b" &unknown;`);
  });

  test('markup in the text stays text when rendered', () => {
    const snippet = '&lt;script&gt;alert(1)&lt;/script&gt; <b>&lt;img src=x onerror=alert(1)&gt;</b>';
    const root = document.createElement('div');
    render(
      <p>{snippetParts(snippet).map((p, i) => (p.match ? <mark key={i}>{p.text}</mark> : p.text))}</p>,
      root,
    );
    expect(root.querySelector('script')).toBeNull();
    expect(root.querySelector('img')).toBeNull();
    expect(root.textContent).toBe('<script>alert(1)</script> <img src=x onerror=alert(1)>');
    expect(root.querySelector('mark')?.textContent).toBe('<img src=x onerror=alert(1)>');
  });

  test('a raw tag other than <b> is not markup either', () => {
    expect(snippetParts('<i>x</i>')).toEqual([{ text: '<i>x</i>', match: false }]);
  });

  test('hits grouped by discussion in order of the best hit', () => {
    const hits = [
      { discussion: 'b', id: 1 },
      { discussion: 'a', id: 2 },
      { discussion: 'b', id: 3 },
    ];
    expect(groupHits(hits)).toEqual([
      { discussion: 'b', hits: [hits[0], hits[2]] },
      { discussion: 'a', hits: [hits[1]] },
    ]);
  });
});
