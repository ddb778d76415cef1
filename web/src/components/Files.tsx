import * as api from '../api';
import type { FileInfo } from '../api';
import { t } from '../i18n';
import { attachments, formatSize, removeAttachment } from '../files/store';

/** Hands the file to the browser to save under its name: it streams to disk, resumable, never held by the page. */
export function downloadFile(f: FileInfo): void {
  const a = document.createElement('a');
  a.href = api.fileUrl(f.id);
  a.download = f.name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function Thumb({ file }: { file: FileInfo }) {
  return <img class="file-thumb" src={api.fileUrl(file.id, true)} alt={file.name} />;
}

/** A message's files; `tab` puts their buttons in or out of the tab order (the message list's roving focus). */
export function MessageFiles({ files, tab = 0 }: { files: FileInfo[]; tab?: number }) {
  return (
    <ul class="message-files">
      {files.map((f) => (
        <li key={f.id} class="message-file" data-file-id={f.id}>
          {f.thumbnail && (
            <button type="button" class="thumb-button" tabIndex={tab} aria-label={t('files.download_label', { name: f.name })} onClick={() => downloadFile(f)}>
              <Thumb file={f} />
            </button>
          )}
          <span class="file-name">{f.name}</span> <span class="muted file-size">{formatSize(f.size)}</span>{' '}
          <button type="button" class="download link" tabIndex={tab} aria-label={t('files.download_label', { name: f.name })} onClick={() => downloadFile(f)}>
            {t('files.download')}
          </button>
        </li>
      ))}
    </ul>
  );
}

/** The composer's files: progress while hashing and uploading, "retrying" after a cut, a remove button. */
export function AttachmentList({ discussion }: { discussion: string }) {
  const mine = attachments.value.filter((a) => a.discussion === discussion);
  if (mine.length === 0) return null;
  return (
    <ul class="attachments" aria-label={t('files.attached')}>
      {mine.map((a) => (
        <li key={a.key} class={`attachment ${a.state}`} data-state={a.state}>
          <span class="file-name">{a.name}</span> <span class="muted">{formatSize(a.size)}</span>{' '}
          {a.state !== 'done' && a.state !== 'failed' && (
            <progress max={a.size || 1} value={a.progress} aria-label={t(`files.state.${a.state}`)} />
          )}
          <span class="attachment-state muted">{a.state === 'failed' ? a.error : t(`files.state.${a.state}`)}</span>
          <button type="button" class="remove-attachment link" aria-label={t('files.remove', { name: a.name })} onClick={() => removeAttachment(a.key)}>
            ✕
          </button>
        </li>
      ))}
    </ul>
  );
}
