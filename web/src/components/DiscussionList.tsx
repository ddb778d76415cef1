import { t, tn } from '../i18n';
import { discussionName, discussions, discussionsError, loadDiscussions, me, selected } from '../state';

export function DiscussionList() {
  const list = discussions.value;
  const error = discussionsError.value;
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
  if (list.length === 0) return <p class="sidebar-note muted">{t('discussions.empty')}</p>;
  const myId = me.value?.id;
  return (
    <ul class="discussions">
      {list.map((d) => {
        const active = d.id === selected.value;
        return (
          <li key={d.id}>
            <button
              type="button"
              class={active ? 'discussion active' : 'discussion'}
              aria-current={active ? 'true' : undefined}
              onClick={() => (selected.value = d.id)}
            >
              <span class="discussion-name">{discussionName(d, myId)}</span>
              {d.unread > 0 && (
                <>
                  <span class="badge" aria-hidden="true">
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
  );
}
