// Ctrl+K: go to a discussion by typing part of its name.
import { useSignal } from '@preact/signals';
import { useEffect, useRef } from 'preact/hooks';
import { t, tn } from '../i18n';
import { discussionName, discussions, me, selected } from '../state';
import { listMove, moveIndex } from '../keys';
import { filterDiscussions } from './DiscussionList';
import { Modal } from './Modal';

const SHOWN = 50;

export function SwitcherDialog({ onClose }: { onClose(): void }) {
  const query = useSignal('');
  const active = useSignal(0);
  const field = useRef<HTMLInputElement>(null);
  const myId = me.value?.id;
  const found = filterDiscussions(discussions.value ?? [], query.value, myId).slice(0, SHOWN);
  const at = Math.min(active.value, found.length - 1);
  useEffect(() => field.current?.focus(), []);
  useEffect(() => {
    document.getElementById(`switcher-${at}`)?.scrollIntoView({ block: 'nearest' });
  }, [at]);

  function open(id: string) {
    selected.value = id;
    onClose();
  }

  function onKeyDown(e: KeyboardEvent) {
    const move = listMove(e);
    // Home and End stay with the text field.
    if (move === 'up' || move === 'down') {
      e.preventDefault();
      active.value = moveIndex(at, found.length, move);
      return;
    }
    if (e.key === 'Enter' && !e.isComposing) {
      e.preventDefault();
      const d = found[at];
      if (d) open(d.id);
    }
  }

  return (
    <Modal id="switcher" class="switcher" title={t('switcher.title')} onClose={onClose}>
      <input
        ref={field}
        type="text"
        class="switcher-input"
        role="combobox"
        aria-label={t('switcher.label')}
        aria-expanded="true"
        aria-controls="switcher-list"
        aria-autocomplete="list"
        aria-describedby="switcher-hint"
        aria-activedescendant={found.length > 0 ? `switcher-${at}` : undefined}
        autocomplete="off"
        value={query.value}
        onInput={(e) => {
          query.value = (e.currentTarget as HTMLInputElement).value;
          active.value = 0;
        }}
        onKeyDown={onKeyDown}
      />
      <p id="switcher-hint" class="muted switcher-hint">
        {t('switcher.hint')}
      </p>
      <ul id="switcher-list" class="switcher-list" role="listbox" aria-label={t('switcher.results')}>
        {found.map((d, i) => (
          <li
            key={d.id}
            id={`switcher-${i}`}
            role="option"
            aria-selected={i === at}
            class={i === at ? 'switcher-option active' : 'switcher-option'}
            data-discussion={d.id}
            onClick={() => open(d.id)}
          >
            <span class="switcher-name">{discussionName(d, myId)}</span>
            {d.unread > 0 && (
              <>
                <span class="badge unread-badge" aria-hidden="true">
                  {d.unread > 99 ? '99+' : d.unread}
                </span>
                <span class="visually-hidden">, {tn('discussions.unread', d.unread)}</span>
              </>
            )}
          </li>
        ))}
      </ul>
      {found.length === 0 && <p class="muted">{t('discussions.no_match')}</p>}
    </Modal>
  );
}
