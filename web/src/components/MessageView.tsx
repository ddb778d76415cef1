import { useComputed, useSignal } from '@preact/signals';
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import {
  Virtualizer,
  elementScroll,
  measureElement,
  observeElementOffset,
  observeElementRect,
} from '@tanstack/virtual-core';
import type { DiscussionInfo, Message } from '../api';
import { MessageFiles } from './Files';
import { NotifyLevel } from './Status';
import * as api from '../api';
import { formatDateTime, formatDay, formatTime, t, type Key } from '../i18n';
import { me } from '../state';
import {
  act,
  chatError,
  isLoading,
  loadOlder,
  pendingJump,
  presence,
  statusTexts,
  markRead,
  openTimeline,
  outboxItems,
  refreshSoon,
  retryOutbox,
  discardOutbox,
  timelines,
  typingIn,
  typingBy,
  watchDiscussion,
} from '../chat/store';
import { buildRows, loginOf, readTarget, textSegments, type Row } from '../chat/view';
import { typingText } from './DiscussionList';
import { messageAction } from '../keys';
import { Composer, type ComposerMode } from './Composer';
import { GroupSettingsDialog } from './People';
import { EditHistoryDialog } from './EditHistory';

export const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

type ViewRow = Row | { kind: 'top'; key: 'top' };

function useVirtualizer(scroller: { current: HTMLDivElement | null }, rows: ViewRow[]) {
  const [, rerender] = useState(0);
  const keys = useRef(rows);
  keys.current = rows;
  const options = {
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: (i: number) => (keys.current[i]?.kind === 'day' ? 36 : 64),
    getItemKey: (i: number) => keys.current[i]?.key ?? i,
    observeElementRect,
    observeElementOffset,
    scrollToFn: elementScroll,
    measureElement,
    overscan: 8,
    // A chat: prepended older pages keep what is on screen in place, and new
    // messages are followed while the reader is at the end.
    anchorTo: 'end' as const,
    followOnAppend: true,
    onChange: () => rerender((n) => n + 1),
  };
  const [v] = useState(() => new Virtualizer<HTMLDivElement, HTMLElement>(options));
  v.setOptions(options);
  useLayoutEffect(() => v._didMount(), []);
  useLayoutEffect(() => v._willUpdate());
  return v;
}

export function MessageView({ discussion, title }: { discussion: DiscussionInfo; title: string }) {
  const id = discussion.id;
  const myId = me.value?.id;
  const scroller = useRef<HTMLDivElement>(null);
  const mode = useSignal<ComposerMode>({ kind: 'new' });
  const settingsOpen = useSignal(false);
  const historyOf = useSignal<Message | null>(null);
  const highlight = useSignal<string | null>(null);
  /** The message in the tab order (roving focus); null: the newest. */
  const chosen = useSignal<string | null>(null);
  const tl = timelines.value[id];
  const messages = tl?.messages ?? [];
  // Row 0 says whether older messages exist (part of the list, so the virtualizer measures it).
  const rows = useMemo<ViewRow[]>(() => [{ kind: 'top', key: 'top' }, ...buildRows(messages)], [messages]);
  const byId = useMemo(() => new Map(messages.map((m) => [m.id, m])), [messages]);
  const v = useVirtualizer(scroller, rows);
  const scrolledToEnd = useRef(false);
  /** The reader is at the newest message (updated on scroll). */
  const atEnd = useRef(true);
  const pending = useComputed(() => outboxItems.value.filter((o) => o.discussion === id));
  void typingBy.value;
  const typing = typingText(typingIn(id));

  useEffect(() => {
    void openTimeline(id);
    // The list leaves out group members; the composer's @completion needs them.
    if (discussion.kind !== 'object' && discussion.members.length === 0) refreshSoon(id, 0);
    // An object discussion's live events come while it is open here, followed or not.
    if (discussion.kind !== 'object') return;
    watchDiscussion(id, true);
    return () => watchDiscussion(id, false);
  }, [id]);

  // My own new message: show it, wherever I was reading.
  const lastRow = rows[rows.length - 1];
  const lastMine = lastRow?.kind === 'message' && lastRow.message.author === myId ? lastRow.key : null;
  const seenLast = useRef<string | null>(null);
  useLayoutEffect(() => {
    if (!tl?.loaded) return;
    if (lastMine && seenLast.current !== null && seenLast.current !== lastMine) v.scrollToIndex(rows.length - 1, { align: 'end' });
    seenLast.current = lastRow?.key ?? '';
  }, [lastRow?.key]);

  // On first load: to the newest message.
  useLayoutEffect(() => {
    if (!tl?.loaded || scrolledToEnd.current || rows.length <= 1) return;
    scrolledToEnd.current = true;
    v.scrollToIndex(rows.length - 1, { align: 'end' });
  }, [tl?.loaded, rows.length]);

  // After a page: still near the top (or a pane it does not fill, which cannot be scrolled)? The next one.
  useEffect(() => {
    const el = scroller.current;
    if (!el || !tl?.loaded || !tl.more || isLoading(id)) return;
    if ((el.scrollTop < 400 && !atEnd.current) || el.scrollHeight <= el.clientHeight + 400) void loadOlder(id);
  }, [tl?.loaded, tl?.oldest]);

  // A pane that changes size (a rotated phone, a growing composer) keeps a reader at the end there.
  useEffect(() => {
    const el = scroller.current;
    if (!el || typeof ResizeObserver === 'undefined') return;
    let height = el.clientHeight;
    const ro = new ResizeObserver(() => {
      if (el.clientHeight === height) return;
      height = el.clientHeight;
      if (atEnd.current) v.scrollToEnd();
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  // Older pages when the reader nears the top.
  function onScroll() {
    const el = scroller.current;
    if (el) atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    if (!el || !tl?.loaded || !tl.more) return;
    if (el.scrollTop < 400 && !isLoading(id)) void loadOlder(id);
  }

  // Read markers: only messages actually on screen, only while the page is visible.
  const visible = useRef(new Set<number>());
  const observer = useMemo(
    () =>
      typeof IntersectionObserver === 'undefined'
        ? null
        : new IntersectionObserver(
            (entries) => {
              for (const e of entries) {
                const seq = Number((e.target as HTMLElement).dataset.seq);
                if (e.isIntersecting) visible.current.add(seq);
                else visible.current.delete(seq);
              }
              reportRead();
            },
            { threshold: 0.5 },
          ),
    [id],
  );
  useEffect(() => () => observer?.disconnect(), [observer]);
  useEffect(() => {
    const onVisibility = () => reportRead();
    document.addEventListener('visibilitychange', onVisibility);
    window.addEventListener('focus', onVisibility);
    return () => {
      document.removeEventListener('visibilitychange', onVisibility);
      window.removeEventListener('focus', onVisibility);
    };
  }, [id]);
  const readTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  function reportRead() {
    if (readTimer.current) clearTimeout(readTimer.current);
    readTimer.current = setTimeout(() => {
      const now = timelines.value[id];
      if (!now?.loaded) return;
      const seq = readTarget(visible.current, now.messages, now.cursor, document.visibilityState === 'visible');
      if (seq !== null) void markRead(id, seq);
    }, 300);
  }
  useEffect(() => reportRead(), [tl?.cursor]);

  async function jumpTo(messageId: string) {
    for (let page = 0; page < 20; page += 1) {
      const rowsNow = buildRows(timelines.value[id]?.messages ?? []);
      const at = rowsNow.findIndex((r) => r.key === messageId);
      const index = at < 0 ? -1 : at + 1; // after the top row
      if (index >= 0) {
        v.scrollToIndex(index, { align: 'center' });
        highlight.value = messageId;
        setTimeout(() => {
          if (highlight.value === messageId) highlight.value = null;
        }, 2000);
        return;
      }
      const before = timelines.value[id];
      if (!before?.more) break;
      await loadOlder(id);
      if (timelines.value[id] === before) break;
    }
    chatError.value = t('message.original_missing');
  }

  // A search result asked for a message of this discussion.
  useEffect(() => {
    const want = pendingJump.value;
    if (!want || want.discussion !== id || !tl?.loaded) return;
    pendingJump.value = null;
    void jumpTo(want.message);
  }, [pendingJump.value, tl?.loaded]);

  const chosenId = chosen.value !== null && byId.has(chosen.value) ? chosen.value : (messages[messages.length - 1]?.id ?? null);

  /** Focuses a message's element once the virtualizer has rendered it. */
  function focusMessage(messageId: string, tries = 10) {
    const el = scroller.current?.querySelector<HTMLElement>(`article[data-message-id="${CSS.escape(messageId)}"]`);
    if (el) el.focus({ preventScroll: true });
    else if (tries > 0) requestAnimationFrame(() => focusMessage(messageId, tries - 1));
  }

  function choose(messageId: string) {
    chosen.value = messageId;
    const at = rows.findIndex((r) => r.key === messageId);
    if (at >= 0) v.scrollToIndex(at, { align: 'auto' });
    focusMessage(messageId);
  }

  function focusComposer() {
    document.querySelector<HTMLTextAreaElement>('.composer-input')?.focus();
  }

  async function remove(m: Message) {
    if (!confirm(t('message.delete_confirm'))) return;
    await act(() => api.deleteMessage(id, m.id));
  }

  /** Keys on a chosen message: move, reply, edit, delete, back to the box. */
  function onMessageKey(e: KeyboardEvent, m: Message) {
    const action = messageAction(e);
    if (!action) return;
    const at = messages.findIndex((x) => x.id === m.id);
    e.preventDefault();
    switch (action) {
      case 'up':
      case 'down':
      case 'first':
      case 'last': {
        const to =
          action === 'up' ? messages[Math.max(0, at - 1)]
          : action === 'down' ? messages[Math.min(messages.length - 1, at + 1)]
          : action === 'first' ? messages[0]
          : messages[messages.length - 1];
        if (to) choose(to.id);
        // At the top: older messages, if any (the virtualizer keeps the place).
        if (action === 'up' && at === 0 && tl?.more && !isLoading(id)) void loadOlder(id);
        break;
      }
      case 'reply':
        if (!m.deleted) mode.value = { kind: 'reply', message: m };
        break;
      case 'edit':
        if (!m.deleted && m.author === myId) mode.value = { kind: 'edit', message: m };
        break;
      case 'delete':
        if (!m.deleted && (m.author === myId || (isGroup && amOwner))) void remove(m);
        break;
      case 'composer':
        focusComposer();
        break;
    }
  }

  /** The composer's ↑ (edit my last message) and Ctrl+↑ (reply to the last one); false when there is none. */
  function editLast(): boolean {
    const m = [...messages].reverse().find((x) => x.author === myId && !x.deleted);
    if (!m) return false;
    mode.value = { kind: 'edit', message: m };
    v.scrollToIndex(rows.findIndex((r) => r.key === m.id), { align: 'auto' });
    return true;
  }
  function replyLast(): boolean {
    const m = [...messages].reverse().find((x) => !x.deleted);
    if (!m) return false;
    mode.value = { kind: 'reply', message: m };
    return true;
  }

  const items = v.getVirtualItems();
  const peer = discussion.kind === 'dialog' ? discussion.members.find((m) => m.user !== myId)?.user : undefined;
  const peerState = peer ? presence.value[peer] : undefined;
  const peerText = peer ? statusTexts.value[peer] : undefined;
  const peerLine = peer && (peerState || peerText)
    ? [peerState && peerState !== 'invisible' ? t(`presence.${peerState === 'available' || peerState === 'away' || peerState === 'dnd' ? peerState : 'offline'}` as Key) : '', peerText ?? '']
        .filter(Boolean)
        .join(' · ')
    : '';
  const isGroup = discussion.kind === 'group';
  const amOwner = discussion.members.some((m) => m.user === myId && m.role === 'owner');

  return (
    <section class="conversation" aria-labelledby="pane-title">
      <header class="pane-head">
        <h1 class="pane-title" id="pane-title">
          {title}
        </h1>
        {peerLine && <p class="peer-status muted">{peerLine}</p>}
        <NotifyLevel discussion={id} />
        {isGroup && (
          <button type="button" class="group-settings" aria-haspopup="dialog" onClick={() => (settingsOpen.value = true)}>
            {t('group.settings')}
          </button>
        )}
      </header>
      <div class="error pane-error" role="alert">
        {chatError.value}
      </div>
      <div class="messages" ref={scroller} onScroll={onScroll} aria-busy={!tl?.loaded}>
        <div class="virtual" style={{ height: `${v.getTotalSize()}px` }}>
          <ol class="message-list" aria-label={t('message.list_label')}
            style={{ transform: `translateY(${items[0]?.start ?? 0}px)` }}>
            {items.map((item) => {
              const row = rows[item.index];
              if (!row) return null;
              if (row.kind === 'top') {
                return (
                  <li key={row.key} data-index={item.index} ref={v.measureElement} class="history-start muted">
                    {!tl?.loaded ? t('message.loading') : tl.more ? t('message.loading_older') : t('message.history_start')}
                  </li>
                );
              }
              if (row.kind === 'day') {
                return (
                  <li key={row.key} data-index={item.index} ref={v.measureElement} class="day-separator">
                    <span>{formatDay(row.at)}</span>
                  </li>
                );
              }
              const m = row.message;
              return (
                <li
                  key={row.key}
                  data-index={item.index}
                  data-seq={m.seq}
                  ref={(el) => {
                    v.measureElement(el);
                    if (el) observer?.observe(el);
                  }}
                  class="message-row"
                >
                  <MessageItem
                    message={m}
                    myId={myId}
                    discussion={id}
                    original={m.reply_to ? byId.get(m.reply_to) : undefined}
                    canDelete={m.author === myId || (isGroup && amOwner)}
                    highlighted={highlight.value === m.id}
                    chosen={chosenId === m.id}
                    onFocus={() => (chosen.value = m.id)}
                    onKey={(e) => onMessageKey(e, m)}
                    onDelete={() => void remove(m)}
                    onReply={() => (mode.value = { kind: 'reply', message: m })}
                    onEdit={() => (mode.value = { kind: 'edit', message: m })}
                    onHistory={() => (historyOf.value = m)}
                    onJump={jumpTo}
                  />
                </li>
              );
            })}
          </ol>
        </div>
      </div>
      {pending.value.length > 0 && (
        <ol class="outbox" aria-label={t('outbox.label')}>
          {pending.value.map((o) => (
            <li key={o.client_msg_id} class={`outbox-item ${o.state}`} data-client-msg-id={o.client_msg_id}>
              <p class="message-text">{o.text}</p>
              {o.state === 'pending' ? (
                <span class="outbox-state" title={t('outbox.pending')}>
                  <span aria-hidden="true">⏳</span>
                  <span class="visually-hidden">{t('outbox.pending')}</span>
                </span>
              ) : (
                <span class="outbox-failed">
                  <span aria-hidden="true">✗</span> {t('outbox.failed', { reason: o.error ?? '' })}
                  <button type="button" class="retry" onClick={() => void retryOutbox(o.client_msg_id)}>
                    {t('outbox.retry')}
                  </button>
                  <button type="button" class="discard" onClick={() => void discardOutbox(o.client_msg_id)}>
                    {t('outbox.discard')}
                  </button>
                </span>
              )}
            </li>
          ))}
        </ol>
      )}
      <p class="typing" aria-live="polite">
        {typing}
      </p>
      <Composer discussion={discussion} mode={mode} byId={byId} onEditLast={editLast} onReplyLast={replyLast} />
      {settingsOpen.value && <GroupSettingsDialog discussion={discussion} onClose={() => (settingsOpen.value = false)} />}
      {historyOf.value && (
        <EditHistoryDialog discussion={id} message={historyOf.value} onClose={() => (historyOf.value = null)} />
      )}
    </section>
  );
}

interface ItemProps {
  message: Message;
  myId: string | undefined;
  discussion: string;
  original: Message | undefined;
  canDelete: boolean;
  highlighted: boolean;
  /** In the tab order (roving focus): its buttons are too. */
  chosen: boolean;
  onFocus(): void;
  onKey(e: KeyboardEvent): void;
  onDelete(): void;
  onReply(): void;
  onEdit(): void;
  onHistory(): void;
  onJump(id: string): void;
}

function MessageItem({ message: m, myId, discussion, original, canDelete, highlighted, chosen, onFocus, onKey, onDelete, onReply, onEdit, onHistory, onJump }: ItemProps) {
  const tab = chosen ? 0 : -1;
  const picking = useSignal(false);
  const mine = m.author === myId;
  const mentionsMe = !!myId && m.mentions.includes(myId);
  const cls = ['message', mine ? 'mine' : '', mentionsMe ? 'mentions-me' : '', highlighted ? 'highlighted' : '', m.deleted ? 'deleted' : '']
    .filter(Boolean)
    .join(' ');

  function toggle(emoji: string) {
    const has = m.reactions.find((r) => r.emoji === emoji)?.users.includes(myId ?? '') ?? false;
    picking.value = false;
    void act(() => api.react(discussion, m.id, emoji, !has));
  }

  return (
    <article
      class={cls}
      data-message-id={m.id}
      aria-label={t('message.by', { name: loginOf(m.author) })}
      tabIndex={tab}
      aria-keyshortcuts={m.deleted ? undefined : mine ? 'R E Delete' : canDelete ? 'R Delete' : 'R'}
      onFocusIn={onFocus}
      onKeyDown={(e) => {
        // Only keys on the message itself: its buttons keep theirs.
        if (e.target === e.currentTarget) onKey(e);
      }}
    >
      <header class="message-head">
        <span class="author" title={m.author}>
          {loginOf(m.author)}
        </span>
        <time class="muted" dateTime={new Date(m.created_at).toISOString()} title={formatDateTime(m.created_at)}>
          {formatTime(m.created_at)}
        </time>
        {m.edited_at !== undefined && !m.deleted && (
          <button type="button" class="edited link" tabIndex={tab} onClick={onHistory} title={formatDateTime(m.edited_at)}>
            {t('message.edited')}
          </button>
        )}
      </header>
      {m.reply_to && (
        <button type="button" class="reply-quote" tabIndex={tab} onClick={() => onJump(m.reply_to!)}>
          <span class="reply-author">{original ? loginOf(original.author) : t('message.reply')}</span>{' '}
          <span class="reply-text">
            {original ? (original.deleted ? t('message.deleted') : (original.text ?? '').slice(0, 140)) : t('message.original')}
          </span>
        </button>
      )}
      {m.deleted ? (
        <p class="tombstone muted">{t('message.deleted')}</p>
      ) : (
        <p class="message-text">
          {textSegments(m.text ?? '', m.mentions, myId).map((s, i) =>
            s.mention ? (
              <span key={i} class={s.mention === 'me' ? 'mention mention-me' : 'mention'}>
                {s.text}
              </span>
            ) : (
              s.text
            ),
          )}
        </p>
      )}
      {!m.deleted && m.files && m.files.length > 0 && <MessageFiles files={m.files} tab={tab} />}
      {!m.deleted && m.actions.length > 0 && (
        <div class="message-actions-bot">
          {m.actions.map((a) => (
            <button type="button" key={a.id} class="bot-action" tabIndex={tab} onClick={() => void act(() => api.click(discussion, m.id, a.id))}>
              {a.label}
            </button>
          ))}
        </div>
      )}
      {m.reactions.length > 0 && (
        <div class="reactions">
          {m.reactions.map((r) => {
            const who = r.users.map(loginOf).join(', ');
            const pressed = !!myId && r.users.includes(myId);
            return (
              <button
                type="button"
                key={r.emoji}
                class={pressed ? 'reaction mine' : 'reaction'}
                aria-pressed={pressed}
                tabIndex={tab}
                title={who}
                aria-label={t('message.reaction_label', { emoji: r.emoji, who })}
                onClick={() => toggle(r.emoji)}
              >
                <span aria-hidden="true">{r.emoji}</span> <span aria-hidden="true">{r.users.length}</span>
                <span class="reaction-who" aria-hidden="true">{who}</span>
              </button>
            );
          })}
        </div>
      )}
      {!m.deleted && (
        <div class="message-tools">
          <button type="button" class="reply" tabIndex={tab} onClick={onReply}>
            {t('message.reply_action')}
          </button>
          <button type="button" class="react" tabIndex={tab} aria-expanded={picking.value} onClick={() => (picking.value = !picking.value)}>
            {t('message.react')}
          </button>
          {mine && (
            <button type="button" class="edit" tabIndex={tab} onClick={onEdit}>
              {t('message.edit')}
            </button>
          )}
          {canDelete && (
            <button type="button" class="delete" tabIndex={tab} onClick={onDelete}>
              {t('message.delete')}
            </button>
          )}
          {picking.value && (
            <span
              class="quick-reactions"
              role="group"
              aria-label={t('message.react')}
              onKeyDown={(e) => {
                // Escape closes the row of reactions and goes back to its button.
                if (e.key !== 'Escape') return;
                e.preventDefault();
                e.stopPropagation();
                picking.value = false;
                (e.currentTarget.closest('.message-tools')?.querySelector('.react') as HTMLElement | null)?.focus();
              }}
            >
              {QUICK_REACTIONS.map((e) => (
                <button type="button" key={e} class="quick-reaction" tabIndex={tab} onClick={() => toggle(e)}>
                  {e}
                </button>
              ))}
            </span>
          )}
        </div>
      )}
    </article>
  );
}
