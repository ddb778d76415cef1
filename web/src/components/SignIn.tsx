import { useSignal } from '@preact/signals';
import { useEffect, useRef } from 'preact/hooks';
import type { TargetedEvent } from 'preact';
import { t } from '../i18n';
import { signIn, signInNotice } from '../state';
import { localLanguage, setLocalLanguage } from '../chat/store';
import { LanguageSelect } from './Status';
import type { LangChoice } from '../i18n';

export function SignIn() {
  const login = useSignal('');
  const password = useSignal('');
  const busy = useSignal(false);
  const error = useSignal(signInNotice.peek());
  const loginInput = useRef<HTMLInputElement>(null);
  const langChoice = useSignal<LangChoice>(localLanguage());

  useEffect(() => {
    loginInput.current?.focus();
  }, []);

  async function onSubmit(event: TargetedEvent<HTMLFormElement, SubmitEvent>) {
    event.preventDefault();
    if (busy.value) return;
    busy.value = true;
    error.value = '';
    const problem = await signIn(login.value, password.value);
    // On success this component is gone; on failure show why and keep the login.
    busy.value = false;
    error.value = problem;
    if (problem) password.value = '';
  }

  return (
    <main class="center">
      <form class="card signin" onSubmit={onSubmit} aria-labelledby="signin-title" noValidate>
        <p class="brand">Veche</p>
        <h1 id="signin-title">{t('signin.title')}</h1>
        <label for="signin-login">{t('signin.login')}</label>
        <input
          id="signin-login"
          name="username"
          ref={loginInput}
          type="text"
          autocomplete="username"
          autocapitalize="none"
          spellcheck={false}
          aria-required="true"
          aria-describedby="signin-error"
          value={login.value}
          onInput={(e) => (login.value = e.currentTarget.value)}
        />
        <label for="signin-password">{t('signin.password')}</label>
        <input
          id="signin-password"
          name="password"
          type="password"
          autocomplete="current-password"
          aria-required="true"
          aria-describedby="signin-error"
          value={password.value}
          onInput={(e) => (password.value = e.currentTarget.value)}
        />
        <div id="signin-error" class="error" role="alert" aria-live="assertive">
          {error.value}
        </div>
        <button type="submit" class="primary" disabled={busy.value} aria-busy={busy.value}>
          {busy.value ? t('signin.submitting') : t('signin.submit')}
        </button>
      </form>
      <div class="signin-language">
        <LanguageSelect
          value={langChoice.value}
          onChange={(c) => {
            langChoice.value = c;
            setLocalLanguage(c);
          }}
        />
      </div>
    </main>
  );
}

