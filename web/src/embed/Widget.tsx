import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { ApiError, type DiscussionEvent, type Message } from '../api';
import { applyEvents, applyHistory, emptyTimeline, type Timeline } from '../chat/reducer';
import { buildRows, loginOf, textSegments } from '../chat/view';
import { checkFile, formatSize, refusalText } from '../files/policy';
import { hashBlob } from '../files/sha256';
import { backoff, runUpload, type FileInfo } from '../files/upload';
import { formatDay, formatTime, t, tn } from '../i18n';
import { EmbedClient, EmbedError, allowedOrigins, exchange } from './client';
import {
  acceptsMessage,
  hostTarget,
  parseEmbedPath,
  parseHostCommand,
  tokenFromFragment,
  type EmbedObject,
  type HostEvent,
} from './origins';

type Phase =
  | { kind: 'loading' }
  | { kind: 'failed'; text: string }
  | { kind: 'open' }
  | { kind: 'ended'; reason: string };

/** A file being attached in the widget's composer: checked, hashed, uploaded (resumed after a cut). */
interface Attachment {
  key: string;
  name: string;
  size: number;
  state: 'hashing' | 'uploading' | 'retrying' | 'done' | 'failed';
  progress: number;
  upload?: string;
  file?: FileInfo;
  error?: string;
}

let attachmentCounter = 0;

/** What the widget tells its host, and 1C's form through `window.vecheEmbed`. */
interface HostState {
  ready: boolean;
  discussion: string | null;
  unread: number;
  ended: string | null;
}

declare global {
  interface Window {
    vecheEmbed?: { state(): HostState };
  }
}

const hostState: HostState = { ready: false, discussion: null, unread: 0, ended: null };
window.vecheEmbed = { state: () => ({ ...hostState }) };
let allowed: string[] = [];

/** Posts to the host page if it is allowed, and clicks the hidden element 1C's form listens to. */
function tell(event: HostEvent): void {
  const framed = window.parent !== window;
  const ancestors = (location as Location & { ancestorOrigins?: DOMStringList }).ancestorOrigins;
  const target = hostTarget(framed, ancestors?.[0] ?? null, document.referrer, allowed);
  if (target) window.parent.postMessage(event, target);
  const hook = document.getElementById('veche-event');
  if (hook) {
    hook.setAttribute('data-event', event.type);
    hook.click();
  }
}

function errorText(e: unknown): string {
  if (e instanceof EmbedError) {
    if (e.code === 'used_token') return t('embed.used_token');
    if (e.code === 'expired_token') return t('embed.expired_token');
    return t('embed.failed', { message: e.message });
  }
  return t('embed.failed', { message: e instanceof Error ? e.message : String(e) });
}

function newId(): string {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `w-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** Waits for the host to hand over a token by postMessage (when the fragment had none). */
function tokenFromHost(): Promise<string> {
  return new Promise((resolve) => {
    const listener = (e: MessageEvent) => {
      if (!acceptsMessage(e.origin, e.source === window.parent && window.parent !== window, allowed)) return;
      const command = parseHostCommand(e.data);
      if (command?.type === 'token') {
        window.removeEventListener('message', listener);
        resolve(command.token);
      }
    };
    window.addEventListener('message', listener);
  });
}

export function Widget() {
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [timeline, setTimeline] = useState<Timeline | null>(null);
  const [title, setTitle] = useState('');
  const [unread, setUnread] = useState(0);
  const [draft, setDraft] = useState('');
  const [attachments, setAttachments] = useState<Attachment[]>([]);
  const [fileNotice, setFileNotice] = useState('');
  const attached = useRef<Attachment[]>([]);
  const dropped = useRef(new Set<string>());
  const picker = useRef<HTMLInputElement | null>(null);
  const client = useRef<EmbedClient | null>(null);
  const list = useRef<HTMLDivElement | null>(null);
  const root = useRef<HTMLDivElement | null>(null);
  const tl = useRef<Timeline | null>(null);
  const readSeq = useRef(0);
  const refreshTimer = useRef<ReturnType<typeof setTimeout> | null>(null);

  const setTl = (next: Timeline) => {
    tl.current = next;
    setTimeline(next);
  };

  const end = (reason: string) => {
    client.current?.stop();
    hostState.ended = reason;
    setPhase({ kind: 'ended', reason });
    tell({ source: 'veche', v: 1, type: 'ended', reason });
  };

  // Unread counts come from the node only.
  const refresh = () => {
    if (refreshTimer.current) clearTimeout(refreshTimer.current);
    refreshTimer.current = setTimeout(() => {
      const c = client.current;
      if (!c) return;
      c.discussion()
        .then((info) => {
          setTitle(info.title);
          readSeq.current = info.read_seq;
          if (info.unread !== hostState.unread || !hostState.ready) {
            hostState.unread = info.unread;
            setUnread(info.unread);
            tell({ source: 'veche', v: 1, type: 'unread', count: info.unread });
          }
        })
        .catch((e) => {
          if (e instanceof EmbedError && (e.code === 'session_ended' || e.status === 401)) end(e.message);
        });
    }, 150);
  };

  const markRead = () => {
    const c = client.current;
    const current = tl.current;
    if (!c || !current || document.visibilityState !== 'visible') return;
    const el = list.current;
    const atBottom = !el || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (!atBottom || current.cursor <= readSeq.current) return;
    readSeq.current = current.cursor;
    c.markRead(current.cursor).then(refresh, () => {});
  };

  const catchUp = async (c: EmbedClient) => {
    let current = tl.current;
    if (!current) return;
    for (;;) {
      const page = await c.sync(current.cursor);
      const { timeline: next } = applyEvents(current, page.events);
      current = next;
      if (!page.more || page.events.length === 0) break;
    }
    setTl(current);
  };

  useEffect(() => {
    const object: EmbedObject | null = parseEmbedPath(location.pathname);
    if (!object) {
      setPhase({ kind: 'failed', text: t('embed.no_token') });
      return;
    }
    // The token leaves the address at once: it is used once, and nothing should copy it.
    const fromFragment = tokenFromFragment(location.hash);
    if (location.hash) history.replaceState(null, '', location.pathname);
    let stopped = false;
    (async () => {
      let token = fromFragment;
      if (!token) {
        allowed = await allowedOrigins(object.app);
        if (window.parent === window) {
          setPhase({ kind: 'failed', text: t('embed.no_token') });
          return;
        }
        token = await tokenFromHost();
      }
      const session = await exchange(token, object);
      if (stopped) return;
      allowed = session.origins;
      const c = new EmbedClient(session);
      client.current = c;
      const info = await c.discussion();
      setTitle(info.title);
      readSeq.current = info.read_seq;
      const first = applyHistory(emptyTimeline(session.discussion), await c.history(null));
      setTl(first);
      setPhase({ kind: 'open' });
      hostState.ready = true;
      hostState.discussion = session.discussion;
      hostState.unread = info.unread;
      setUnread(info.unread);
      tell({ source: 'veche', v: 1, type: 'ready', discussion: session.discussion });
      tell({ source: 'veche', v: 1, type: 'unread', count: info.unread });
      c.connect({
        onOpen: () => void catchUp(c).catch(() => {}),
        onEnded: (reason) => end(reason || t('embed.ended', { reason: '' })),
        onEvent: (event) => {
          if (event.type === 'discussion') {
            const current = tl.current;
            if (!current) return;
            const { timeline: next, gap } = applyEvents(current, [event.event as DiscussionEvent]);
            setTl(next);
            if (gap) void catchUp(c).catch(() => {});
            refresh();
          } else if (event.type === 'discussion_removed') {
            end(String(event.discussion ? 'access to the object was withdrawn' : ''));
          }
        },
      });
    })().catch((e) => {
      if (!stopped) setPhase({ kind: 'failed', text: errorText(e) });
    });
    const onMessage = (e: MessageEvent) => {
      if (!acceptsMessage(e.origin, e.source === window.parent && window.parent !== window, allowed)) return;
      if (parseHostCommand(e.data)?.type === 'focus') document.getElementById('widget-input')?.focus();
    };
    window.addEventListener('message', onMessage);
    const onVisible = () => markRead();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      stopped = true;
      window.removeEventListener('message', onMessage);
      document.removeEventListener('visibilitychange', onVisible);
      client.current?.stop();
    };
  }, []);

  // Newest at the bottom; the read marker moves only while the newest message is in view.
  useLayoutEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
    markRead();
  }, [timeline?.messages.length]);

  // The host sizes its frame to the content.
  useEffect(() => {
    const el = root.current;
    if (!el || typeof ResizeObserver === 'undefined') return;
    let last = -1;
    const observer = new ResizeObserver(() => {
      const height = Math.ceil(el.scrollHeight);
      if (height === last) return;
      last = height;
      tell({ source: 'veche', v: 1, type: 'resize', height });
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  const setFiles = (next: Attachment[]) => {
    attached.current = next;
    setAttachments(next);
  };
  const patchFile = (key: string, change: Partial<Attachment>) =>
    setFiles(attached.current.map((a) => (a.key === key ? { ...a, ...change } : a)));

  const upload = async (c: EmbedClient, key: string, f: File) => {
    try {
      const sha = await hashBlob(f, (done) => patchFile(key, { progress: done }));
      if (dropped.current.has(key)) return;
      const up = await c.createUpload(f.name, f.size, sha);
      patchFile(key, { state: 'uploading', progress: up.confirmed, upload: up.id });
      const file = await runUpload(f, up, c.transport, {
        onProgress: (bytes) => patchFile(key, { progress: bytes, state: 'uploading' }),
        waitRetry: (attempt) => {
          patchFile(key, { state: 'retrying' });
          return backoff(attempt);
        },
        cancelled: () => dropped.current.has(key),
      });
      patchFile(key, { state: 'done', progress: f.size, file });
    } catch (e) {
      if (dropped.current.has(key)) return;
      const rule = e instanceof EmbedError || e instanceof ApiError ? e.rule : null;
      patchFile(key, { state: 'failed', error: rule ? refusalText(f.name, { rule }) : `${f.name}: ${errorText(e)}` });
    }
  };

  /** Files picked, pasted or dropped: the node's policy first (naming the refusing rule), then uploaded. */
  const attach = async (list: FileList | File[] | null | undefined) => {
    const c = client.current;
    const files = list ? Array.from(list) : [];
    if (!c || files.length === 0) return;
    setFileNotice('');
    let policy;
    try {
      policy = await c.filePolicy();
    } catch (e) {
      setFileNotice(errorText(e));
      return;
    }
    const refusals: string[] = [];
    let pending = attached.current.filter((a) => a.state !== 'done' && a.state !== 'failed').reduce((n, a) => n + a.size, 0);
    for (const f of files) {
      const refusal = checkFile(policy, 'object', { name: f.name, size: f.size, type: f.type }, pending);
      if (refusal) {
        refusals.push(refusalText(f.name, refusal));
        continue;
      }
      pending += f.size;
      const key = `w${++attachmentCounter}`;
      setFiles([...attached.current, { key, name: f.name, size: f.size, state: 'hashing', progress: 0 }]);
      void upload(c, key, f);
    }
    setFileNotice(refusals.join(' '));
  };

  const removeFile = (key: string) => {
    dropped.current.add(key);
    const a = attached.current.find((x) => x.key === key);
    if (a?.upload && a.state !== 'done') client.current?.cancelUpload(a.upload);
    setFiles(attached.current.filter((x) => x.key !== key));
  };

  const submit = () => {
    const c = client.current;
    const text = draft.trim();
    if (!c) return;
    if (attached.current.some((a) => a.state !== 'done' && a.state !== 'failed')) {
      setFileNotice(t('files.wait'));
      return;
    }
    const done = attached.current.filter((a) => a.state === 'done' && a.file);
    if (!text && done.length === 0) return;
    setDraft('');
    setFileNotice('');
    setFiles(attached.current.filter((a) => !done.includes(a)));
    c.send(text, newId(), done.map((a) => a.file!.id)).catch((e) => setPhase({ kind: 'failed', text: errorText(e) }));
  };

  const me = client.current?.session.user;
  return (
    <div class="widget" ref={root} data-phase={phase.kind}>
      <header class="widget-head">
        <h1 class="widget-title">{title || '\u00a0'}</h1>
        {unread > 0 && (
          <span class="widget-unread" data-count={unread}>
            {tn('embed.unread', unread)}
          </span>
        )}
        <a class="widget-full" href="/" target="_blank" rel="noopener noreferrer">
          {t('embed.open_full')}
        </a>
      </header>
      {phase.kind === 'loading' && (
        <p class="widget-note" role="status">
          {t('embed.loading')}
        </p>
      )}
      {phase.kind === 'failed' && (
        <p class="widget-note widget-error" role="alert">
          {phase.text}
        </p>
      )}
      {phase.kind === 'ended' && (
        <p class="widget-note widget-ended" role="alert">
          {t('embed.ended', { reason: phase.reason })}
        </p>
      )}
      {phase.kind === 'open' && timeline && (
        <>
          <div class="widget-messages" ref={list} role="log" aria-live="polite" aria-label={t('message.list_label')} onScroll={markRead}>
            {timeline.messages.length === 0 && <p class="widget-note">{t('embed.empty')}</p>}
            {buildRows(timeline.messages).map((row) =>
              row.kind === 'day' ? (
                <div class="widget-day" key={row.key}>
                  {formatDay(row.at)}
                </div>
              ) : (
                <MessageRow key={row.key} message={row.message} me={me} client={client.current} />
              ),
            )}
          </div>
          {attachments.length > 0 && (
            <ul class="widget-attachments" aria-label={t('files.attached')}>
              {attachments.map((a) => (
                <li key={a.key} class="widget-attachment" data-state={a.state}>
                  <span class="file-name">{a.name}</span> <span class="widget-muted">{formatSize(a.size)}</span>{' '}
                  {a.state !== 'done' && a.state !== 'failed' && (
                    <progress max={a.size || 1} value={a.progress} aria-label={t(`files.state.${a.state}`)} />
                  )}
                  <span class="widget-muted">{a.state === 'failed' ? a.error : t(`files.state.${a.state}`)}</span>
                  <button type="button" class="widget-remove-file" aria-label={t('files.remove', { name: a.name })} onClick={() => removeFile(a.key)}>
                    ✕
                  </button>
                </li>
              ))}
            </ul>
          )}
          {fileNotice && (
            <p class="widget-note widget-file-notice" role="alert">
              {fileNotice}
            </p>
          )}
          <form
            class="widget-composer"
            onSubmit={(e) => {
              e.preventDefault();
              submit();
            }}
            onDragOver={(e) => {
              if (!e.dataTransfer?.types.includes('Files')) return;
              e.preventDefault();
              e.dataTransfer.dropEffect = 'copy';
            }}
            onDrop={(e) => {
              if (!e.dataTransfer?.files.length) return;
              e.preventDefault();
              void attach(e.dataTransfer.files);
            }}
          >
            <input
              ref={picker}
              type="file"
              multiple
              class="widget-file-input"
              tabIndex={-1}
              aria-hidden="true"
              onChange={(e) => {
                const el = e.currentTarget as HTMLInputElement;
                void attach(el.files).finally(() => (el.value = ''));
              }}
            />
            <button type="button" class="widget-attach" aria-label={t('files.attach')} title={t('files.attach')} onClick={() => picker.current?.click()}>
              <span aria-hidden="true">📎</span>
            </button>
            <textarea
              id="widget-input"
              class="widget-input"
              rows={2}
              aria-label={t('composer.label')}
              placeholder={t('composer.placeholder')}
              value={draft}
              onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
              onPaste={(e) => {
                const files = e.clipboardData?.files;
                if (files && files.length > 0) {
                  e.preventDefault();
                  void attach(files);
                }
              }}
              onKeyDown={(e) => {
                if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
                  e.preventDefault();
                  submit();
                }
              }}
            />
            <button type="submit" class="widget-send">
              {t('composer.send')}
            </button>
          </form>
        </>
      )}
      <button type="button" id="veche-event" hidden tabIndex={-1} aria-hidden="true" />
    </div>
  );
}

function MessageRow({ message, me, client }: { message: Message; me: string | undefined; client: EmbedClient | null }) {
  const mine = message.author === me;
  return (
    <div class={`widget-message${mine ? ' mine' : ''}`} data-seq={message.seq} aria-label={t('message.by', { name: loginOf(message.author) })}>
      <div class="widget-meta">
        <span class="widget-author">{loginOf(message.author)}</span>
        <time class="widget-time">{formatTime(message.created_at)}</time>
        {message.edited_at !== undefined && !message.deleted && <span class="widget-edited">{t('message.edited')}</span>}
      </div>
      {message.deleted ? (
        <p class="widget-text deleted">{t('message.deleted')}</p>
      ) : (
        <p class="widget-text">
          {textSegments(message.text ?? '', message.mentions, me).map((s, i) =>
            s.mention ? (
              <span key={i} class={`mention${s.mention === 'me' ? ' me' : ''}`}>
                {s.text}
              </span>
            ) : (
              s.text
            ),
          )}
        </p>
      )}
      {!message.deleted && message.files && message.files.length > 0 && client && (
        <ul class="widget-files">
          {message.files.map((f) => (
            <WidgetFile key={f.id} file={f} client={client} />
          ))}
        </ul>
      )}
      {message.reactions.length > 0 && (
        <div class="widget-reactions">
          {message.reactions.map((r) => {
            const mineReaction = !!me && r.users.includes(me);
            return (
              <button
                type="button"
                key={r.emoji}
                class={`widget-reaction${mineReaction ? ' mine' : ''}`}
                title={r.users.map(loginOf).join(', ')}
                onClick={() => void client?.react(message.id, r.emoji, !mineReaction).catch(() => {})}
              >
                {r.emoji} {r.users.length}
              </button>
            );
          })}
        </div>
      )}
    </div>
  );
}

/** Object URLs of previews, fetched once per file with the embed session. */
const previews = new Map<string, Promise<string>>();

function preview(client: EmbedClient, file: FileInfo): Promise<string> {
  let p = previews.get(file.id);
  if (!p) {
    p = client.file(file, true).then((b) => URL.createObjectURL(b));
    p.catch(() => previews.delete(file.id));
    previews.set(file.id, p);
  }
  return p;
}

/** Saves the file under its name (fetched with the embed session, whose token no link may carry). */
async function save(client: EmbedClient, file: FileInfo): Promise<void> {
  const url = URL.createObjectURL(await client.file(file));
  const a = document.createElement('a');
  a.href = url;
  a.download = file.name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function WidgetFile({ file, client }: { file: FileInfo; client: EmbedClient }) {
  const [thumb, setThumb] = useState<string | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    if (!file.thumbnail) return;
    let live = true;
    preview(client, file).then(
      (u) => live && setThumb(u),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [file.id]);
  const download = () => {
    setError('');
    save(client, file).catch((e) => setError(errorText(e)));
  };
  return (
    <li class="widget-file" data-file-id={file.id}>
      {thumb && (
        <button type="button" class="widget-thumb-button" aria-label={t('files.download_label', { name: file.name })} onClick={download}>
          <img class="widget-thumb" src={thumb} alt={file.name} />
        </button>
      )}
      <span class="file-name">{file.name}</span> <span class="widget-muted">{formatSize(file.size)}</span>{' '}
      <button type="button" class="widget-download" aria-label={t('files.download_label', { name: file.name })} onClick={download}>
        {t('files.download')}
      </button>
      {error && (
        <span class="widget-error" role="alert">
          {' '}
          {error}
        </span>
      )}
    </li>
  );
}
