import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { DiscussionEvent, Message } from '../api';
import { applyEvents, applyHistory, emptyTimeline, type Timeline } from '../chat/reducer';
import { buildRows, loginOf, textSegments } from '../chat/view';
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

  const submit = () => {
    const c = client.current;
    const text = draft.trim();
    if (!c || !text) return;
    setDraft('');
    c.send(text, newId()).catch((e) => setPhase({ kind: 'failed', text: errorText(e) }));
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
          <form
            class="widget-composer"
            onSubmit={(e) => {
              e.preventDefault();
              submit();
            }}
          >
            <textarea
              id="widget-input"
              class="widget-input"
              rows={2}
              aria-label={t('composer.label')}
              placeholder={t('composer.placeholder')}
              value={draft}
              onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
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
