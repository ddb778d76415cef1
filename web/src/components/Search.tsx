import { useSignal } from '@preact/signals';
import { useEffect, useRef } from 'preact/hooks';
import * as api from '../api';
import type { SearchHit } from '../api';
import { formatDateTime, t, type Key } from '../i18n';
import { discussionName, discussions, errorText, me, selected } from '../state';
import { requestJump } from '../chat/store';
import { loginOf } from '../chat/view';
import { bounds, formatQuery, parseQuery, type Chip, type ParsedQuery } from '../search/query';
import { groupHits, snippetParts } from '../search/snippet';
import { Modal } from './Modal';

/** The node's request for a parsed query, or the text of why it cannot be made. */
export function searchRequest(q: ParsedQuery, myId: string, list: api.DiscussionInfo[]): api.SearchRequest | string {
  const req: api.SearchRequest = { query: q.text, limit: 50 };
  const home = myId.split('@')[1] ?? '';
  for (const c of q.chips) {
    if (c.kind === 'from') req.author = c.value.includes('@') || !home ? c.value.toLowerCase() : `${c.value.toLowerCase()}@${home}`;
    if (c.kind === 'has') req.has_file = true;
    if (c.kind === 'in') {
      const want = c.value.toLocaleLowerCase();
      const names = list.map((d) => ({ d, name: discussionName(d, myId).toLocaleLowerCase() }));
      const found = names.find((x) => x.name === want) ?? names.find((x) => x.name.includes(want));
      if (!found) return t('search.no_discussion', { name: c.value });
      req.discussion = found.d.id;
    }
  }
  Object.assign(req, bounds(q.chips));
  return req;
}

function chipLabel(c: Chip): string {
  return t(`search.chip.${c.kind}` as Key, { value: c.kind === 'has' ? t('search.chip.file') : c.value });
}

export function SearchDialog({ onClose }: { onClose(): void }) {
  const input = useSignal('');
  const results = useSignal<api.SearchResults | null>(null);
  const busy = useSignal(false);
  const error = useSignal('');
  const field = useRef<HTMLInputElement>(null);
  const parsed = parseQuery(input.value);
  useEffect(() => field.current?.focus(), []);

  async function run() {
    const q = parseQuery(input.value);
    error.value = '';
    if (q.text === '' && q.chips.length === 0) return;
    const req = searchRequest(q, me.value?.id ?? '', discussions.value ?? []);
    if (typeof req === 'string') {
      error.value = req;
      return;
    }
    busy.value = true;
    try {
      results.value = await api.search(req);
    } catch (e) {
      results.value = null;
      error.value = errorText(e);
    } finally {
      busy.value = false;
    }
  }

  function removeChip(i: number) {
    input.value = formatQuery({ text: parsed.text, chips: parsed.chips.filter((_, j) => j !== i) });
    void run();
  }

  function open(hit: SearchHit) {
    requestJump(hit.discussion, hit.message_id);
    selected.value = hit.discussion;
    onClose();
  }

  const list = discussions.value ?? [];
  const myId = me.value?.id;
  const r = results.value;
  return (
    <Modal id="search" title={t('search.title')} class="search-dialog" onClose={onClose}>
      <form
        class="search-form"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void run();
        }}
      >
        <input
          ref={field}
          type="search"
          class="search-input"
          value={input.value}
          placeholder={t('search.placeholder')}
          aria-label={t('search.label')}
          aria-describedby="search-help"
          onInput={(e) => (input.value = (e.currentTarget as HTMLInputElement).value)}
        />
        <button type="submit" class="primary" disabled={busy.value}>
          {t('search.submit')}
        </button>
      </form>
      <p id="search-help" class="muted search-help">
        {t('search.help')}
      </p>
      {parsed.chips.length > 0 && (
        <ul class="chips" aria-label={t('search.filters')}>
          {parsed.chips.map((c, i) => (
            <li key={`${c.kind}-${i}`} class={`chip chip-${c.kind}`} data-kind={c.kind}>
              <span>{chipLabel(c)}</span>
              <button type="button" class="chip-remove link" aria-label={t('search.remove_filter', { filter: chipLabel(c) })} onClick={() => removeChip(i)}>
                ✕
              </button>
            </li>
          ))}
        </ul>
      )}
      <p class="error" role="alert">
        {error.value}
      </p>
      <div class="search-results" aria-live="polite" aria-busy={busy.value}>
        {r && r.corrected_query && <p class="corrected">{t('search.corrected', { query: r.corrected_query })}</p>}
        {r && r.hits.length === 0 && <p class="muted search-empty">{t('search.nothing')}</p>}
        {r &&
          groupHits(r.hits).map((g) => {
            const d = list.find((x) => x.id === g.discussion);
            return (
              <section key={g.discussion} class="search-group" data-discussion={g.discussion}>
                <h3>{d ? discussionName(d, myId) : g.discussion}</h3>
                <ul>
                  {g.hits.map((h) => (
                    <li key={h.message_id}>
                      <button type="button" class="search-hit" data-message-id={h.message_id} onClick={() => open(h)}>
                        <span class="hit-head">
                          <span class="author">{loginOf(h.author)}</span> <span class="muted">{formatDateTime(h.created_at)}</span>
                        </span>
                        <span class="snippet">
                          {snippetParts(h.snippet).map((p, i) => (p.match ? <mark key={i}>{p.text}</mark> : p.text))}
                        </span>
                      </button>
                    </li>
                  ))}
                </ul>
              </section>
            );
          })}
        {r?.more && <p class="muted">{t('search.more')}</p>}
      </div>
    </Modal>
  );
}
