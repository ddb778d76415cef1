import { useSignal } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import type { Message, MessageVersion } from '../api';
import * as api from '../api';
import { formatDateTime, t } from '../i18n';
import { errorText } from '../state';
import { Modal } from './Modal';

export function EditHistoryDialog({ discussion, message, onClose }: { discussion: string; message: Message; onClose(): void }) {
  const versions = useSignal<MessageVersion[] | null>(null);
  const error = useSignal('');
  useEffect(() => {
    api.editHistory(discussion, message.id).then(
      (v) => (versions.value = v),
      (e) => (error.value = errorText(e)),
    );
  }, [message.id]);
  return (
    <Modal id="edit-history" class="edit-history" title={t('message.history_title')} onClose={onClose}>
      <div class="error" role="alert">
        {error.value}
      </div>
      {versions.value === null ? (
        !error.value && <p class="muted" role="status">{t('message.loading')}</p>
      ) : (
        <ol class="versions">
          {versions.value.map((v) => (
            <li key={v.version} class="version">
              <span class="muted">
                {t('message.version', { n: v.version, date: formatDateTime(v.at) })}
              </span>
              <p class="message-text">{v.text}</p>
            </li>
          ))}
        </ol>
      )}
    </Modal>
  );
}
