import { useSignal } from '@preact/signals';
import { useEffect } from 'preact/hooks';
import * as api from '../api';
import type { FileInfo } from '../api';
import { t } from '../i18n';
import { act } from '../chat/store';
import { attachments, formatSize, removeAttachment } from '../files/store';

const thumbs = new Map<string, Promise<string>>();

/** A preview's object URL, fetched once per file (the session cookie needs our header, so no bare `src`). */
function thumbUrl(id: string): Promise<string> {
  let p = thumbs.get(id);
  if (!p) {
    p = api.fetchFile(id, true).then((b) => URL.createObjectURL(b));
    p.catch(() => thumbs.delete(id));
    thumbs.set(id, p);
  }
  return p;
}

/** Fetches the file and hands it to the browser as a download under its name. */
export async function downloadFile(f: FileInfo): Promise<void> {
  const blob = await api.fetchFile(f.id);
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = f.name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function Thumb({ file }: { file: FileInfo }) {
  const url = useSignal<string | null>(null);
  useEffect(() => {
    let live = true;
    thumbUrl(file.id).then(
      (u) => live && (url.value = u),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [file.id]);
  return url.value ? <img class="file-thumb" src={url.value} alt={file.name} /> : <span class="file-thumb placeholder" aria-hidden="true" />;
}

/** A message's files; `tab` puts their buttons in or out of the tab order (the message list's roving focus). */
export function MessageFiles({ files, tab = 0 }: { files: FileInfo[]; tab?: number }) {
  return (
    <ul class="message-files">
      {files.map((f) => (
        <li key={f.id} class="message-file" data-file-id={f.id}>
          {f.thumbnail && (
            <button type="button" class="thumb-button" tabIndex={tab} aria-label={t('files.download_label', { name: f.name })} onClick={() => void act(() => downloadFile(f))}>
              <Thumb file={f} />
            </button>
          )}
          <span class="file-name">{f.name}</span> <span class="muted file-size">{formatSize(f.size)}</span>{' '}
          <button type="button" class="download link" tabIndex={tab} aria-label={t('files.download_label', { name: f.name })} onClick={() => void act(() => downloadFile(f))}>
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
