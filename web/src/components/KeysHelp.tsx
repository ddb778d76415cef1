// Ctrl+/ or ?: the list of keyboard shortcuts.
import { Fragment } from 'preact';
import { t, type Key } from '../i18n';
import { keyLabel } from '../keys';
import { prefs } from '../chat/store';
import { Modal } from './Modal';

type Entry = [keys: string[], what: Key];

/** One shortcut's keys: `Alt+↑` → <kbd>Alt</kbd>+<kbd>↑</kbd>; several ways joined by "or". */
function Keys({ ways, mac }: { ways: string[]; mac: boolean }) {
  return (
    <>
      {ways.map((way, i) => (
        <Fragment key={way}>
          {i > 0 && <span class="muted"> {t('keys.or')} </span>}
          <span class="keys-way">
            {keyLabel(way, mac)
              .split('+')
              .map((k, j) => (
                <span key={j}>
                  {j > 0 && '+'}
                  <kbd>{k}</kbd>
                </span>
              ))}
          </span>
        </Fragment>
      ))}
    </>
  );
}

export function KeysHelpDialog({ onClose }: { onClose(): void }) {
  const mac = typeof navigator !== 'undefined' && /Mac|iPhone|iPad/.test(navigator.platform);
  const send = prefs.value.send_key === 'ctrl_enter' ? 'Ctrl+Enter' : 'Enter';
  const newline = prefs.value.send_key === 'ctrl_enter' ? 'Enter' : 'Shift+Enter';
  const groups: Array<[Key, Entry[]]> = [
    [
      'keys.group.navigation',
      [
        [['Ctrl+K'], 'keys.switcher'],
        [['Alt+↑'], 'keys.prev'],
        [['Alt+↓'], 'keys.next'],
        [['Alt+Shift+↑'], 'keys.prev_unread'],
        [['Alt+Shift+↓'], 'keys.next_unread'],
        [['↑', '↓', 'Home', 'End'], 'keys.list'],
        [['Ctrl+Shift+F'], 'keys.search'],
        [['Ctrl+/', '?'], 'keys.help'],
      ],
    ],
    [
      'keys.group.composer',
      [
        [[send], 'keys.send'],
        [[newline], 'keys.newline'],
        [['↑'], 'keys.edit_last'],
        [['Ctrl+↑'], 'keys.reply_last'],
        [['Esc'], 'keys.cancel'],
      ],
    ],
    [
      'keys.group.messages',
      [
        [['↑', '↓', 'Home', 'End'], 'keys.messages'],
        [['R'], 'keys.reply'],
        [['E'], 'keys.edit'],
        [['Delete'], 'keys.delete'],
        [['Esc'], 'keys.to_composer'],
      ],
    ],
    ['keys.group.dialogs', [[['Esc'], 'keys.close']]],
  ];
  return (
    <Modal id="keys" class="keys-help" title={t('keys.title')} onClose={onClose}>
      {groups.map(([title, entries]) => (
        <section key={title} class="keys-group" aria-labelledby={`keys-${title}`}>
          <h3 id={`keys-${title}`}>{t(title)}</h3>
          <dl class="keys-list">
            {entries.map(([ways, what]) => (
              <div key={what} class="keys-row">
                <dt>
                  <Keys ways={ways} mac={mac} />
                </dt>
                <dd>{t(what)}</dd>
              </div>
            ))}
          </dl>
        </section>
      ))}
    </Modal>
  );
}
