import { signal } from '@preact/signals';
import { t, tn } from '../i18n';
import type { DiscussionInfo } from '../api';
import { discussionName, discussions, discussionsError, loadDiscussions, me, selected } from '../state';
import { presence, typingBy, typingIn } from '../chat/store';
import { loginOf } from '../chat/view';
import { listMove, moveIndex } from '../keys';

/** What the filter box holds (kept while the user switches discussions). */
export const filter = signal('');

/** Discussions whose name contains every word of the filter, in any case. */
export function filterDiscussions(list: DiscussionInfo[], query: string, myId: string | undefined): DiscussionInfo[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return list;
  return list.filter((d) => {
    const name = `${discussionName(d, myId)} ${d.title}`.toLowerCase();
    return words.every((w) => name.includes(w));
  });
}

/** The other member of a dialog. */
export function dialogPeer(d: DiscussionInfo, myId: string | undefined): string | null {
  if (d.kind !== 'dialog') return null;
  return d.members.find((m) => m.user !== myId)?.user ?? null;
}

export function typingText(users: string[]): string {
  if (users.length === 0) return '';
  if (users.length === 1) return t('typing.one', { name: loginOf(users[0]) });
  return tn('typing.many', users.length);
}

export function DiscussionList() {
  const list = discussions.value;
  const error = discussionsError.value;
  // Re-render on typing and presence changes.
  void typingBy.value;
  const states = presence.value;
  if (error) {
    return (
      <div class="sidebar-note">
        <p class="error" role="alert">{error}</p>
        <button type="button" onClick={() => void loadDiscussions()}>
          {t('start.retry')}
        </button>
      </div>
    );
  }
  if (list === null) return <p class="sidebar-note muted" role="status">{t('discussions.loading')}</p>;
  const myId = me.value?.id;
  const shown = filterDiscussions(list, filter.value, myId);
  // Roving focus: one button of the list is in the tab order (the open discussion, else the first);
  // the arrows, Home and End move between them.
  const tabStop = shown.some((d) => d.id === selected.value) ? selected.value : (shown[0]?.id ?? null);
  function onListKey(e: KeyboardEvent) {
    const move = listMove(e);
    const from = (e.target as HTMLElement).closest<HTMLElement>('[data-discussion]');
    if (!move || !from) return;
    e.preventDefault();
    const buttons = [...(e.currentTarget as HTMLElement).querySelectorAll<HTMLElement>('button[data-discussion]')];
    buttons[moveIndex(buttons.indexOf(from), buttons.length, move)]?.focus();
  }
  return (
    <>
      <div class="filter">
        <input
          type="search"
          class="filter-input"
          placeholder={t('discussions.filter')}
          aria-label={t('discussions.filter')}
          value={filter.value}
          onInput={(e) => (filter.value = (e.currentTarget as HTMLInputElement).value)}
        />
      </div>
      {list.length === 0 && <p class="sidebar-note muted">{t('discussions.empty')}</p>}
      {list.length > 0 && shown.length === 0 && <p class="sidebar-note muted">{t('discussions.no_match')}</p>}
      <ul class="discussions" onKeyDown={onListKey}>
        {shown.map((d) => {
          const active = d.id === selected.value;
          const peer = dialogPeer(d, myId);
          const state = peer ? (states[peer] ?? 'offline') : null;
          const typing = typingText(typingIn(d.id));
          return (
            <li key={d.id}>
              <button
                type="button"
                class={active ? 'discussion active' : 'discussion'}
                aria-current={active ? 'true' : undefined}
                data-discussion={d.id}
                tabIndex={d.id === tabStop ? 0 : -1}
                onClick={() => (selected.value = d.id)}
              >
                {state && (
                  <span class={`presence presence-${state}`} title={t(`presence.${presenceKey(state)}`)}>
                    <span class="visually-hidden">{t(`presence.${presenceKey(state)}`)}</span>
                  </span>
                )}
                {!state && <span class={`kind kind-${d.kind}`} aria-hidden="true" />}
                <span class="discussion-text">
                  <span class="discussion-name">{discussionName(d, myId)}</span>
                  {typing && <span class="discussion-typing">{typing}</span>}
                </span>
                {d.mentions > 0 && (
                  <>
                    <span class="badge mention-badge" aria-hidden="true">@</span>
                    <span class="visually-hidden">, {tn('discussions.mentions', d.mentions)}</span>
                  </>
                )}
                {d.unread > 0 && (
                  <>
                    <span class="badge unread-badge" aria-hidden="true">
                      {d.unread > 99 ? '99+' : d.unread}
                    </span>
                    <span class="visually-hidden">, {tn('discussions.unread', d.unread)}</span>
                  </>
                )}
              </button>
            </li>
          );
        })}
      </ul>
    </>
  );
}

function presenceKey(state: string): 'available' | 'away' | 'dnd' | 'offline' {
  return state === 'available' || state === 'away' || state === 'dnd' ? state : 'offline';
}
