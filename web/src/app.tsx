import { phase, start, startError } from './state';
import { t } from './i18n';
import { SignIn } from './components/SignIn';
import { Shell } from './components/Shell';

export function App() {
  switch (phase.value) {
    case 'starting':
      return (
        <main class="center" aria-busy="true">
          <p class="muted" role="status">{t('start.loading')}</p>
        </main>
      );
    case 'unreachable':
      return (
        <main class="center">
          <div class="card">
            <h1 class="brand">Veche</h1>
            <p>{t('start.failed')}</p>
            <p class="error" role="alert">{startError.value}</p>
            <button type="button" class="primary" onClick={() => void start()}>
              {t('start.retry')}
            </button>
          </div>
        </main>
      );
    case 'signed-out':
      return <SignIn />;
    case 'signed-in':
      return <Shell />;
  }
}
