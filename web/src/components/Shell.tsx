import { useSignal } from '@preact/signals';
import { t } from '../i18n';
import { discussionName, discussions, me, selected, shellError, signOut } from '../state';
import { DiscussionList } from './DiscussionList';
import { SessionsDialog } from './SessionsDialog';

export function Shell() {
  const user = me.value;
  const sessionsOpen = useSignal(false);
  const signingOut = useSignal(false);
  const current = discussions.value?.find((d) => d.id === selected.value) ?? null;

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
        <h2 id="discussions-heading">{t('discussions.heading')}</h2>
        <DiscussionList />
      </nav>
      <main class="pane">
        {current ? (
          <>
            <button type="button" class="back" onClick={() => (selected.value = null)}>
              <span aria-hidden="true">← </span>
              {t('discussions.back')}
            </button>
            <h1 class="pane-title">{discussionName(current, user?.id)}</h1>
          </>
        ) : (
          <p class="pane-empty">{t('discussions.choose')}</p>
        )}
      </main>
      {sessionsOpen.value && <SessionsDialog onClose={() => (sessionsOpen.value = false)} />}
    </div>
  );
}
