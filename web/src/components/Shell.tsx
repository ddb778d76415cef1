import { useSignal, useSignalEffect } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import type { Message } from '../api';
import { t } from '../i18n';
import { discussionName, discussions, me, selected, shellError, signOut } from '../state';
import { globalAction, isTextField, stepDiscussion } from '../keys';
import { Announcer } from '../chat/announce';
import { messageListeners } from '../chat/store';
import { loginOf } from '../chat/view';
import { DiscussionList, filter, filterDiscussions } from './DiscussionList';
import { KeysHelpDialog } from './KeysHelp';
import { SwitcherDialog } from './Switcher';
import { SessionsDialog } from './SessionsDialog';
import { MessageView } from './MessageView';
import { NewDialogDialog, NewGroupDialog } from './People';
import { SearchDialog } from './Search';
import { StatusMenu } from './Status';

/** "(3) Veche" in the tab title and a dot on the favicon while anything is unread. */
function useUnreadBadge() {
  useEffect(
    () => () => {
      document.title = 'Veche';
      document.querySelector('link[rel="icon"]')?.setAttribute('href', '/favicon.svg');
    },
    [],
  );
  useSignalEffect(() => {
    const total = (discussions.value ?? []).reduce((n, d) => n + d.unread, 0);
    document.title = total > 0 ? `(${total > 999 ? '999+' : total}) Veche` : 'Veche';
    const icon = document.querySelector<HTMLLinkElement>('link[rel="icon"]');
    const href = total > 0 ? '/favicon-unread.svg' : '/favicon.svg';
    if (icon && icon.getAttribute('href') !== href) icon.setAttribute('href', href);
    const nav = navigator as Navigator & { setAppBadge?: (n: number) => Promise<void>; clearAppBadge?: () => Promise<void> };
    if (total > 0) nav.setAppBadge?.(total).catch(() => {});
    else nav.clearAppBadge?.().catch(() => {});
  });
}

/** New messages of the open discussion, told to screen readers (see chat/announce.ts). */
function useAnnouncer() {
  const text = useSignal('');
  useEffect(() => {
    const announcer = new Announcer((next) => {
      // The same words again would change nothing in the region, and go unsaid.
      text.value = next === text.peek() ? `${next}\u00a0` : next;
    });
    const onMessage = (event: { discussion: string; actor: string; change: unknown }) => {
      const m = (event.change as { message: Message }).message;
      const open = selected.peek();
      if (event.discussion !== open || !m || m.author === me.peek()?.id || m.deleted) return;
      const d = discussions.peek()?.find((x) => x.id === open);
      announcer.push(d ? discussionName(d, me.peek()?.id) : open, {
        author: loginOf(m.author),
        text: m.text ?? '',
        files: m.files?.length ?? 0,
      });
    };
    messageListeners.add(onMessage);
    return () => {
      messageListeners.delete(onMessage);
      announcer.stop();
    };
  }, []);
  return text;
}

export function Shell() {
  const user = me.value;
  const sessionsOpen = useSignal(false);
  const signingOut = useSignal(false);
  const creating = useSignal<'dialog' | 'group' | null>(null);
  const searching = useSignal(false);
  const switching = useSignal(false);
  const helping = useSignal(false);
  const announcement = useAnnouncer();
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.defaultPrevented) return;
      // A modal dialog keeps its own keys (Escape closes it).
      if (document.querySelector('dialog[open]')) return;
      const action = globalAction(e, isTextField(document.activeElement));
      if (!action) return;
      e.preventDefault();
      switch (action) {
        case 'search':
          searching.value = true;
          break;
        case 'switcher':
          switching.value = true;
          break;
        case 'help':
          helping.value = true;
          break;
        default: {
          const list = filterDiscussions(discussions.value ?? [], filter.value, me.value?.id);
          const step = action === 'next' || action === 'next_unread' ? 1 : -1;
          const to = stepDiscussion(list, selected.value, step, action.endsWith('_unread'));
          if (to) selected.value = to;
        }
      }
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);
  const current = discussions.value?.find((d) => d.id === selected.value) ?? null;
  useUnreadBadge();

  async function onSignOut() {
    signingOut.value = true;
    await signOut();
    signingOut.value = false;
  }

  return (
    <div class={current ? 'shell has-selection' : 'shell'}>
      <header class="topbar">
        <span class="brand">Veche</span>
        <p class="me" title={user?.id}>
          <span class="visually-hidden">{t('shell.signed_in_as')} </span>
          <span class="me-name">{user?.display_name || user?.login}</span>
        </p>
        <StatusMenu />
        <button
          type="button"
          class="open-keys"
          onClick={() => (helping.value = true)}
          aria-haspopup="dialog"
          aria-label={t('keys.open')}
          title={t('keys.open')}
          aria-keyshortcuts="Control+/ ?"
        >
          <span aria-hidden="true">⌨</span>
        </button>
        <button type="button" class="open-search" onClick={() => (searching.value = true)} aria-haspopup="dialog" aria-keyshortcuts="Control+Shift+F">
          {t('search.open')}
        </button>
        <button type="button" onClick={() => (sessionsOpen.value = true)} aria-haspopup="dialog">
          {t('shell.sessions')}
        </button>
        <button type="button" onClick={() => void onSignOut()} disabled={signingOut.value}>
          {t('shell.sign_out')}
        </button>
      </header>
      <div class="shell-error error" role="alert">
        {shellError.value}
      </div>
      <nav class="sidebar" aria-labelledby="discussions-heading">
        <div class="sidebar-head">
          <h2 id="discussions-heading">{t('discussions.heading')}</h2>
          <button type="button" class="new-dialog" aria-haspopup="dialog" onClick={() => (creating.value = 'dialog')}>
            {t('people.new_dialog')}
          </button>
          <button type="button" class="new-group" aria-haspopup="dialog" onClick={() => (creating.value = 'group')}>
            {t('people.new_group')}
          </button>
        </div>
        <DiscussionList />
      </nav>
      <main class="pane">
        {current ? (
          <>
            <button type="button" class="back" onClick={() => (selected.value = null)}>
              <span aria-hidden="true">← </span>
              {t('discussions.back')}
            </button>
            <MessageView key={current.id} discussion={current} title={discussionName(current, user?.id)} />
          </>
        ) : (
          <p class="pane-empty">{t('discussions.choose')}</p>
        )}
      </main>
      <div class="visually-hidden" id="announcer" aria-live="polite" aria-atomic="true">
        {announcement.value}
      </div>
      {searching.value && <SearchDialog onClose={() => (searching.value = false)} />}
      {switching.value && <SwitcherDialog onClose={() => (switching.value = false)} />}
      {helping.value && <KeysHelpDialog onClose={() => (helping.value = false)} />}
      {sessionsOpen.value && <SessionsDialog onClose={() => (sessionsOpen.value = false)} />}
      {creating.value === 'dialog' && <NewDialogDialog onClose={() => (creating.value = null)} />}
      {creating.value === 'group' && <NewGroupDialog onClose={() => (creating.value = null)} />}
    </div>
  );
}
