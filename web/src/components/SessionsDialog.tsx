import { useSignal } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import { formatDateTime, t, tn } from '../i18n';
import type { SessionInfo } from '../api';
import { endSession, loadSessions, sessions, sessionsError } from '../state';
import { Modal } from './Modal';

/** This device first, then the most recently active. */
function sortSessions(list: SessionInfo[], current: string): SessionInfo[] {
  return [...list].sort((a, b) =>
    a.id === current ? -1 : b.id === current ? 1 : b.last_seen_at - a.last_seen_at,
  );
}

export function SessionsDialog({ onClose }: { onClose: () => void }) {
  const ending = useSignal<string | null>(null);

  useEffect(() => {
    void loadSessions();
  }, []);

  async function onEnd(id: string) {
    ending.value = id;
    await endSession(id);
    ending.value = null;
  }

  const data = sessions.value;
  const error = sessionsError.value;
  return (
    <Modal id="sessions" class="sessions" title={t('sessions.title')} onClose={onClose}>
      <div class="error" role="alert">
        {error}
      </div>
      {data === null ? (
        !error && <p class="muted" role="status">{t('sessions.loading')}</p>
      ) : (
        <>
          <p class="muted">{tn('sessions.count', data.sessions.length)}</p>
          <ul class="session-list">
            {sortSessions(data.sessions, data.current).map((s) => {
              const current = s.id === data.current;
              const name = s.device_name || s.device_id || t('sessions.unknown_device');
              return (
                <li key={s.id} class={current ? 'session current' : 'session'} data-session={s.id}>
                  <div class="session-text">
                    <span class="session-device">{name}</span>
                    {current && <span class="tag">{t('sessions.current')}</span>}
                    <span class="session-seen muted">
                      {t('sessions.last_seen', { date: formatDateTime(s.last_seen_at) })}
                    </span>
                  </div>
                  {!current && (
                    <button
                      type="button"
                      aria-label={t('sessions.end_label', { device: name })}
                      disabled={ending.value !== null}
                      onClick={() => void onEnd(s.id)}
                    >
                      {t('sessions.end')}
                    </button>
                  )}
                </li>
              );
            })}
          </ul>
        </>
      )}
    </Modal>
  );
}
