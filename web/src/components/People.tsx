// The user directory, starting dialogs, and creating and managing groups.
import { useSignal } from '@preact/signals';
import { useEffect, useRef } from 'preact/hooks';
import type { DirectoryEntry, DiscussionInfo } from '../api';
import * as api from '../api';
import { t, tn } from '../i18n';
import { errorText, me, selected, upsertDiscussion, discussions } from '../state';
import { refreshSoon, subscribePresence } from '../chat/store';
import { loginOf } from '../chat/view';
import { Modal } from './Modal';

/** A search box over the node's directory; `onPick` gets the chosen person. */
function UserSearch({ label, exclude, onPick }: { label: string; exclude: string[]; onPick(u: DirectoryEntry): void }) {
  const query = useSignal('');
  const results = useSignal<DirectoryEntry[]>([]);
  const error = useSignal('');
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const asked = useRef(0);

  function onInput(value: string) {
    query.value = value;
    if (timer.current) clearTimeout(timer.current);
    if (value.trim() === '') {
      results.value = [];
      return;
    }
    const ask = async () => {
      const mine = ++asked.current;
      try {
        const users = await api.directory(value.trim(), 20);
        if (mine === asked.current) {
          results.value = users;
          error.value = '';
        }
      } catch (e) {
        if (mine !== asked.current) return;
        // The node is still building its directory index: ask again shortly.
        if (e instanceof api.ApiError && e.code === 'unavailable') timer.current = setTimeout(ask, 1000);
        else error.value = errorText(e);
      }
    };
    timer.current = setTimeout(ask, 200);
  }
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);

  const shown = results.value.filter((u) => !exclude.includes(u.id));
  return (
    <div class="user-search">
      <input
        type="search"
        class="user-search-input"
        aria-label={label}
        placeholder={label}
        value={query.value}
        autoFocus
        onInput={(e) => onInput((e.currentTarget as HTMLInputElement).value)}
      />
      <div class="error" role="alert">
        {error.value}
      </div>
      {query.value.trim() !== '' && (
        <ul class="user-results" aria-label={t('people.results')}>
          {shown.map((u) => (
            <li key={u.id}>
              <button type="button" class="user-result" data-login={u.login} onClick={() => onPick(u)}>
                <span class="user-name">{u.display_name || u.login}</span>{' '}
                <span class="muted">
                  @{u.login}
                  {u.department ? ` · ${u.department}` : ''}
                </span>
              </button>
            </li>
          ))}
          {shown.length === 0 && <li class="muted">{t('people.none')}</li>}
        </ul>
      )}
    </div>
  );
}

export function NewDialogDialog({ onClose }: { onClose(): void }) {
  const error = useSignal('');
  const myId = me.value?.id ?? '';
  async function pick(u: DirectoryEntry) {
    try {
      const d = await api.openDialog(u.login);
      upsertDiscussion(d);
      subscribePresence();
      selected.value = d.id;
      onClose();
    } catch (e) {
      error.value = errorText(e);
    }
  }
  return (
    <Modal id="new-dialog" class="people" title={t('people.new_dialog')} onClose={onClose}>
      <UserSearch label={t('people.search')} exclude={[myId]} onPick={(u) => void pick(u)} />
      <div class="error" role="alert">
        {error.value}
      </div>
    </Modal>
  );
}

export function NewGroupDialog({ onClose }: { onClose(): void }) {
  const title = useSignal('');
  const members = useSignal<DirectoryEntry[]>([]);
  const error = useSignal('');
  const busy = useSignal(false);
  const myId = me.value?.id ?? '';
  async function create(e: Event) {
    e.preventDefault();
    if (title.value.trim() === '') {
      error.value = t('group.title_missing');
      return;
    }
    busy.value = true;
    try {
      const d = await api.createGroup(title.value.trim(), members.value.map((u) => u.login));
      upsertDiscussion(d);
      selected.value = d.id;
      onClose();
    } catch (err) {
      error.value = errorText(err);
    } finally {
      busy.value = false;
    }
  }
  return (
    <Modal id="new-group" class="people" title={t('people.new_group')} onClose={onClose}>
      <form class="group-form" onSubmit={(e) => void create(e)}>
        <label>
          {t('group.title')}
          <input class="group-title-input" value={title.value} maxLength={200} onInput={(e) => (title.value = (e.currentTarget as HTMLInputElement).value)} />
        </label>
        {members.value.length > 0 && (
          <ul class="chips" aria-label={t('group.members')}>
            {members.value.map((u) => (
              <li key={u.id} class="chip">
                {u.display_name || u.login}
                <button
                  type="button"
                  aria-label={t('group.remove_label', { name: u.login })}
                  onClick={() => (members.value = members.value.filter((x) => x.id !== u.id))}
                >
                  ×
                </button>
              </li>
            ))}
          </ul>
        )}
        <UserSearch
          label={t('group.add_search')}
          exclude={[myId, ...members.value.map((u) => u.id)]}
          onPick={(u) => (members.value = [...members.value, u])}
        />
        <div class="error" role="alert">
          {error.value}
        </div>
        <button type="submit" class="primary create-group" disabled={busy.value}>
          {t('group.create')}
        </button>
      </form>
    </Modal>
  );
}

export function GroupSettingsDialog({ discussion, onClose }: { discussion: DiscussionInfo; onClose(): void }) {
  const myId = me.value?.id ?? '';
  // Follow the list: members and title change while the dialog is open.
  const d = discussions.value?.find((x) => x.id === discussion.id) ?? discussion;
  const title = useSignal(d.title);
  const error = useSignal('');
  const owner = d.members.some((m) => m.user === myId && m.role === 'owner');
  useEffect(() => refreshSoon(d.id, 0), []);

  async function run(action: () => Promise<void>): Promise<boolean> {
    error.value = '';
    try {
      await action();
      refreshSoon(d.id, 0);
      return true;
    } catch (e) {
      error.value = errorText(e);
      return false;
    }
  }

  return (
    <Modal id="group-settings" class="people" title={t('group.settings')} onClose={onClose}>
      <div class="error" role="alert">
        {error.value}
      </div>
      {owner && (
        <form
          class="rename"
          onSubmit={(e) => {
            e.preventDefault();
            if (title.value.trim() !== '') void run(() => api.setTitle(d.id, title.value.trim()));
          }}
        >
          <label>
            {t('group.title')}
            <input class="rename-input" value={title.value} maxLength={200} onInput={(e) => (title.value = (e.currentTarget as HTMLInputElement).value)} />
          </label>
          <button type="submit" class="rename-submit">
            {t('group.rename')}
          </button>
        </form>
      )}
      <h3>{tn('group.member_count', d.members.length)}</h3>
      <ul class="members">
        {d.members.map((m) => (
          <li key={m.user} class="member" data-user={m.user}>
            <span>{loginOf(m.user)}</span>
            {m.role === 'owner' && <span class="tag">{t('group.owner')}</span>}
            {owner && m.user !== myId && (
              <button type="button" class="remove-member" aria-label={t('group.remove_label', { name: loginOf(m.user) })} onClick={() => void run(() => api.removeMember(d.id, m.user))}>
                {t('group.remove')}
              </button>
            )}
          </li>
        ))}
      </ul>
      {owner && (
        <UserSearch
          label={t('group.add_search')}
          exclude={d.members.map((m) => m.user)}
          onPick={(u) => void run(() => api.addMembers(d.id, [u.login]))}
        />
      )}
      <button
        type="button"
        class="leave"
        onClick={() =>
          void run(() => api.removeMember(d.id, myId)).then((ok) => {
            if (!ok) return;
            discussions.value = (discussions.value ?? []).filter((x) => x.id !== d.id);
            if (selected.value === d.id) selected.value = null;
            onClose();
          })
        }
      >
        {t('group.leave')}
      </button>
    </Modal>
  );
}
