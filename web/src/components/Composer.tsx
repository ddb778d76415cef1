import { useSignal, type Signal } from '@preact/signals';
import { useEffect, useRef } from 'preact/hooks';
import type { DiscussionInfo, Message } from '../api';
import * as api from '../api';
import { language, t } from '../i18n';
import { me } from '../state';
import { act, prefs, reportTyping, sendMessage, setSendKey } from '../chat/store';
import { loadDraft, saveDraft } from '../chat/drafts';
import {
  applyCompletion,
  emojiCandidates,
  mentionCandidates,
  tokenAt,
  type EmojiEntry,
  type MentionCandidate,
  type Token,
} from '../chat/complete';
import { emojiData, loadEmoji } from '../chat/emoji';
import { loginOf } from '../chat/view';
import { errorText } from '../state';
import { addFiles, takeDone, uploading } from '../files/store';
import { AttachmentList } from './Files';
import { composerAction } from '../keys';

export type ComposerMode = { kind: 'new' } | { kind: 'reply'; message: Message } | { kind: 'edit'; message: Message };

type Option = { kind: 'mention'; c: MentionCandidate } | { kind: 'emoji'; c: EmojiEntry };

/** Whether this key press sends, for the user's send key. Never during IME composition. */
export function isSendKey(e: Pick<KeyboardEvent, 'key' | 'shiftKey' | 'ctrlKey' | 'metaKey' | 'altKey' | 'isComposing' | 'keyCode'>, sendKey: 'enter' | 'ctrl_enter'): boolean {
  if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return false;
  if (sendKey === 'ctrl_enter') return e.ctrlKey || e.metaKey;
  return !e.shiftKey && !e.ctrlKey && !e.metaKey && !e.altKey;
}

interface ComposerProps {
  discussion: DiscussionInfo;
  mode: Signal<ComposerMode>;
  byId: Map<string, Message>;
  /** ↑ in an empty box: edit my last message; false when there is none. */
  onEditLast(): boolean;
  /** Ctrl+↑: reply to the last message; false when there is none. */
  onReplyLast(): boolean;
}

export function Composer({ discussion, mode, byId, onEditLast, onReplyLast }: ComposerProps) {
  const myId = me.value?.id ?? '';
  const id = discussion.id;
  const text = useSignal(loadDraft(myId, id));
  const token = useSignal<Token | null>(null);
  const active = useSignal(0);
  const pickerOpen = useSignal(false);
  const area = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);
  const emojiButton = useRef<HTMLButtonElement>(null);
  const fileNotice = useSignal('');
  const dragging = useSignal(false);
  const savedDraft = useRef<string | null>(null);
  const m = mode.value;

  // Editing fills the box with the message (the draft is put back afterwards).
  useEffect(() => {
    if (m.kind === 'edit') {
      savedDraft.current = text.value;
      text.value = m.message.text ?? '';
    }
    area.current?.focus();
  }, [m]);

  const options: Option[] = (() => {
    const tok = token.value;
    if (!tok) return [];
    if (tok.kind === 'mention') {
      const members = discussion.members.map((x) => x.user);
      return mentionCandidates(members, tok.query, myId, myId.split('@')[1] ?? '').map((c) => ({ kind: 'mention' as const, c }));
    }
    const data = emojiData.value;
    if (!data) return [];
    return emojiCandidates(data, tok.query).map((c) => ({ kind: 'emoji' as const, c }));
  })();

  function setText(next: string) {
    text.value = next;
    if (mode.value.kind !== 'edit') saveDraft(myId, id, next);
  }

  function onInput(e: Event) {
    const el = e.currentTarget as HTMLTextAreaElement;
    setText(el.value);
    const tok = tokenAt(el.value, el.selectionStart ?? el.value.length);
    token.value = tok;
    active.value = 0;
    if (tok?.kind === 'emoji') void loadEmoji(language());
    if (el.value.trim() !== '' && mode.value.kind !== 'edit') reportTyping(id, true);
  }

  function choose(option: Option) {
    const tok = token.value;
    if (!tok) return;
    const insert = option.kind === 'mention' ? `@${option.c.login}` : option.c.e;
    const next = applyCompletion(text.value, tok, insert);
    setText(next.text);
    token.value = null;
    putCaret(next.text, next.caret);
  }

  /**
   * Puts `value` and the caret into the textarea at once rather than in a later frame: a key
   * typed before that frame would land where the browser's caret was, and the frame would
   * then move the caret back before it (an e2e run typed "смотри" as "мотри…с").
   */
  function putCaret(value: string, caret: number) {
    const el = area.current;
    if (!el) return;
    el.value = value;
    el.setSelectionRange(caret, caret);
    el.focus();
  }

  function insertAtCaret(insert: string) {
    const el = area.current;
    const at = el?.selectionStart ?? text.value.length;
    const end = el?.selectionEnd ?? at;
    const next = text.value.slice(0, at) + insert + text.value.slice(end);
    setText(next);
    putCaret(next, at + insert.length);
  }

  function cancelMode() {
    if (mode.value.kind === 'edit') {
      text.value = savedDraft.current ?? loadDraft(myId, id);
      savedDraft.current = null;
    }
    mode.value = { kind: 'new' };
  }

  async function submit() {
    const body = text.value.trim();
    const current = mode.value;
    if (current.kind === 'edit') {
      if (body === '' || body === current.message.text) {
        cancelMode();
        return;
      }
      if (await act(() => api.edit(id, current.message.id, body))) cancelMode();
      return;
    }
    if (uploading(id)) {
      fileNotice.value = t('files.wait');
      return;
    }
    const files = takeDone(id);
    if (body === '' && files.length === 0) return;
    fileNotice.value = '';
    reportTyping(id, false);
    setText('');
    token.value = null;
    mode.value = { kind: 'new' };
    await act(() => sendMessage(id, body, current.kind === 'reply' ? current.message.id : undefined, files));
  }

  async function attach(list: FileList | File[] | null | undefined) {
    const files = list ? Array.from(list) : [];
    if (files.length === 0) return;
    fileNotice.value = '';
    const refusals = await addFiles(discussion, files, errorText);
    fileNotice.value = refusals.join(' ');
  }

  function onPaste(e: ClipboardEvent) {
    const files = e.clipboardData?.files;
    if (files && files.length > 0) {
      e.preventDefault();
      void attach(files);
    }
  }

  function onDragOver(e: DragEvent) {
    if (!e.dataTransfer?.types.includes('Files')) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    dragging.value = true;
  }

  function onDrop(e: DragEvent) {
    dragging.value = false;
    if (!e.dataTransfer?.files.length) return;
    e.preventDefault();
    void attach(e.dataTransfer.files);
  }

  function onKeyDown(e: KeyboardEvent) {
    if (e.isComposing || e.keyCode === 229) return;
    if (options.length > 0) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const n = options.length;
        active.value = (active.value + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
        return;
      }
      if ((e.key === 'Enter' && !e.ctrlKey && !e.metaKey) || e.key === 'Tab') {
        e.preventDefault();
        choose(options[Math.min(active.value, options.length - 1)]);
        return;
      }
      if (e.key === 'Escape') {
        e.preventDefault();
        token.value = null;
        return;
      }
    }
    const action = composerAction(e, text.value === '');
    if (action === 'edit_last' && mode.value.kind === 'new' && onEditLast()) {
      e.preventDefault();
      return;
    }
    if (action === 'reply_last' && mode.value.kind !== 'edit' && onReplyLast()) {
      e.preventDefault();
      return;
    }
    if (e.key === 'Escape' && mode.value.kind !== 'new') {
      e.preventDefault();
      cancelMode();
      return;
    }
    if (isSendKey(e, prefs.value.send_key)) {
      e.preventDefault();
      void submit();
    }
  }

  const listId = `complete-${id}`;
  const replyTo = m.kind === 'reply' ? (byId.get(m.message.id) ?? m.message) : null;
  return (
    <div
      class={dragging.value ? 'composer dragging' : 'composer'}
      onDragOver={onDragOver}
      onDragLeave={() => (dragging.value = false)}
      onDrop={onDrop}
    >
      {m.kind !== 'new' && (
        <div class="composer-mode">
          <span>
            {m.kind === 'edit'
              ? t('composer.editing')
              : t('composer.replying', { name: loginOf(replyTo?.author ?? '') })}
          </span>
          {replyTo && <span class="composer-quote muted">{(replyTo.text ?? '').slice(0, 100)}</span>}
          <button type="button" class="cancel-mode" onClick={cancelMode}>
            {t('composer.cancel')}
          </button>
        </div>
      )}
      {options.length > 0 && (
        <ul class="completions" id={listId} role="listbox" aria-label={t('composer.suggestions')}>
          {options.map((o, i) => (
            <li
              key={o.kind === 'mention' ? o.c.user : o.c.e}
              id={`${listId}-${i}`}
              role="option"
              aria-selected={i === active.value}
              class={i === active.value ? 'completion active' : 'completion'}
              onMouseDown={(e) => {
                e.preventDefault();
                choose(o);
              }}
            >
              {o.kind === 'mention' ? `@${o.c.login}` : `${o.c.e} :${o.c.s[0] ?? ''}:`}
            </li>
          ))}
        </ul>
      )}
      <AttachmentList discussion={id} />
      <p class="file-notice error" role="alert">
        {fileNotice.value}
      </p>
      <div class="composer-row">
        <textarea
          ref={area}
          class="composer-input"
          rows={2}
          value={text.value}
          placeholder={t('composer.placeholder')}
          aria-label={t('composer.label')}
          aria-autocomplete="list"
          aria-controls={options.length > 0 ? listId : undefined}
          aria-activedescendant={options.length > 0 ? `${listId}-${active.value}` : undefined}
          onInput={onInput}
          onKeyDown={onKeyDown}
          onPaste={onPaste}
          onBlur={() => reportTyping(id, false)}
        />
        <input
          ref={picker}
          type="file"
          multiple
          class="file-input visually-hidden"
          tabIndex={-1}
          aria-hidden="true"
          onChange={(e) => {
            const el = e.currentTarget as HTMLInputElement;
            void attach(el.files).finally(() => (el.value = ''));
          }}
        />
        <button type="button" class="attach-button" aria-label={t('files.attach')} title={t('files.attach')} onClick={() => picker.current?.click()}>
          <span aria-hidden="true">📎</span>
        </button>
        <button
          type="button"
          class="emoji-button"
          ref={emojiButton}
          aria-label={t('composer.emoji')}
          aria-expanded={pickerOpen.value}
          onClick={() => {
            pickerOpen.value = !pickerOpen.value;
            if (pickerOpen.value) void loadEmoji(language());
          }}
        >
          <span aria-hidden="true">😀</span>
        </button>
        <button type="button" class="primary send" onClick={() => void submit()}>
          {m.kind === 'edit' ? t('composer.save') : t('composer.send')}
        </button>
      </div>
      <label class="send-key muted">
        <input
          type="checkbox"
          checked={prefs.value.send_key === 'ctrl_enter'}
          onChange={(e) => void setSendKey((e.currentTarget as HTMLInputElement).checked ? 'ctrl_enter' : 'enter')}
        />{' '}
        {t('composer.ctrl_enter')}
      </label>
      {pickerOpen.value && (
        <EmojiPicker
          onPick={(e) => {
            insertAtCaret(e);
            pickerOpen.value = false;
          }}
          onClose={() => {
            pickerOpen.value = false;
            emojiButton.current?.focus();
          }}
        />
      )}
    </div>
  );
}

function EmojiPicker({ onPick, onClose }: { onPick(emoji: string): void; onClose(): void }) {
  const query = useSignal('');
  const data = emojiData.value;
  const shown = data ? emojiCandidates(data, query.value, query.value ? 120 : 240) : [];
  return (
    <div
      class="emoji-picker"
      role="dialog"
      aria-label={t('composer.emoji')}
      onKeyDown={(e) => {
        if (e.key === 'Escape') {
          e.preventDefault();
          onClose();
        }
      }}
    >
      <input
        type="search"
        class="emoji-search"
        placeholder={t('composer.emoji_search')}
        aria-label={t('composer.emoji_search')}
        value={query.value}
        autoFocus
        onInput={(e) => (query.value = (e.currentTarget as HTMLInputElement).value)}
      />
      {!data ? (
        <p class="muted" role="status">{t('composer.emoji_loading')}</p>
      ) : (
        <div class="emoji-grid">
          {shown.map((e) => (
            <button type="button" key={e.e} class="emoji" title={`:${e.s[0] ?? ''}: ${e.a}`} aria-label={e.a} onClick={() => onPick(e.e)}>
              {e.e}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
