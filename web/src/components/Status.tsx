import { useSignal } from '@preact/signals';
import type { NotificationLevel, PresenceChoice } from '../api';
import { t, type Key, type LangChoice } from '../i18n';
import { me } from '../state';
import { prefs, setLanguageChoice, setPref, statusTexts } from '../chat/store';
import { levels, myChoice, notifyError, setDesktop, setLevel, setStatus } from '../notify/store';
import { chime } from '../notify/sound';
import { disablePush, enablePush, pushEnabled, pushSupported } from '../notify/push';
import { Modal } from './Modal';

const CHOICES: PresenceChoice[] = ['auto', 'away', 'dnd', 'invisible'];

/** The topbar's status button and its dialog: status, status text, sound and desktop notifications. */
export function StatusMenu() {
  const open = useSignal(false);
  const choice = myChoice.value;
  const text = statusTexts.value[me.value?.id ?? ''] ?? '';
  return (
    <>
      <button type="button" class={`status-button status-${choice}`} aria-haspopup="dialog" onClick={() => (open.value = true)}>
        <span class={`presence presence-${choice === 'auto' ? 'available' : choice}`} aria-hidden="true" />{' '}
        {t(`status.choice.${choice}` as Key)}
        {text && <span class="status-text-short muted"> · {text}</span>}
      </button>
      {open.value && <StatusDialog onClose={() => (open.value = false)} />}
    </>
  );
}

function StatusDialog({ onClose }: { onClose(): void }) {
  const choice = useSignal<PresenceChoice>(myChoice.value);
  const text = useSignal(statusTexts.value[me.value?.id ?? ''] ?? '');
  const saving = useSignal(false);
  async function save(e: Event) {
    e.preventDefault();
    saving.value = true;
    const ok = await setStatus(choice.value, text.value.trim().slice(0, 100));
    saving.value = false;
    if (ok) onClose();
  }
  return (
    <Modal id="status" title={t('status.title')} class="status-dialog" onClose={onClose}>
      <form onSubmit={(e) => void save(e)}>
        <fieldset class="status-choices">
          <legend>{t('status.legend')}</legend>
          {CHOICES.map((c) => (
            <label key={c} class="status-choice">
              <input type="radio" name="status" value={c} checked={choice.value === c} onChange={() => (choice.value = c)} />{' '}
              {t(`status.choice.${c}` as Key)}
            </label>
          ))}
        </fieldset>
        <label class="field">
          <span>{t('status.text')}</span>
          <input
            type="text"
            class="status-text-input"
            maxLength={100}
            value={text.value}
            placeholder={t('status.text_placeholder')}
            onInput={(e) => (text.value = (e.currentTarget as HTMLInputElement).value)}
          />
        </label>
        <fieldset class="notify-prefs">
          <legend>{t('notify.legend')}</legend>
          <label>
            <input type="checkbox" class="sound-pref" checked={prefs.value.sound} onChange={(e) => void setPref('sound', (e.currentTarget as HTMLInputElement).checked)} />{' '}
            {t('notify.sound')}
          </label>{' '}
          <button type="button" class="link test-sound" onClick={() => chime()}>
            {t('notify.sound_test')}
          </button>
          <label>
            <input type="checkbox" class="desktop-pref" checked={prefs.value.desktop} onChange={(e) => void setDesktop((e.currentTarget as HTMLInputElement).checked)} />{' '}
            {t('notify.desktop')}
          </label>
          {pushSupported() && <PushToggle />}
        </fieldset>
        <LanguageSelect value={prefs.value.language} onChange={(c) => void setLanguageChoice(c)} />
        <p class="error" role="alert">
          {notifyError.value}
        </p>
        <div class="dialog-actions">
          <button type="submit" class="primary save-status" disabled={saving.value}>
            {t('status.save')}
          </button>
        </div>
      </form>
    </Modal>
  );
}

const LEVELS: NotificationLevel[] = ['default', 'all', 'mentions', 'none'];
const MUTE_MS = 8 * 60 * 60 * 1000;

/** The discussion's notification level and an 8-hour mute (the node's `set_notifications`, which push obeys too). */
export function NotifyLevel({ discussion }: { discussion: string }) {
  const setting = levels.value[discussion];
  const level = setting?.level ?? 'default';
  const muted = setting?.muted_until !== undefined && setting.muted_until > Date.now();
  return (
    <span class="notify-level-box">
      <label>
        <span class="visually-hidden">{t('notify.level')}</span>
        <select
          class="notify-level"
          value={level}
          title={t('notify.level')}
          onChange={(e) => void setLevel(discussion, (e.currentTarget as HTMLSelectElement).value as NotificationLevel, setting?.muted_until)}
        >
          {LEVELS.map((l) => (
            <option key={l} value={l}>
              {t(`notify.level.${l}` as Key)}
            </option>
          ))}
        </select>
      </label>
      <button
        type="button"
        class="mute link"
        aria-pressed={muted}
        onClick={() => void setLevel(discussion, level, muted ? undefined : Date.now() + MUTE_MS)}
      >
        {muted ? t('notify.unmute') : t('notify.mute')}
      </button>
    </span>
  );
}

function PushToggle() {
  const on = useSignal(pushEnabled());
  const busy = useSignal(false);
  async function change(want: boolean) {
    busy.value = true;
    notifyError.value = '';
    try {
      if (want) await enablePush();
      else await disablePush();
      on.value = want;
    } catch (e) {
      notifyError.value = t('notify.push_failed', { reason: e instanceof Error ? e.message : String(e) });
    } finally {
      busy.value = false;
    }
  }
  return (
    <label>
      <input type="checkbox" class="push-pref" checked={on.value} disabled={busy.value} onChange={(e) => void change((e.currentTarget as HTMLInputElement).checked)} />{' '}
      {t('notify.push')}
    </label>
  );
}

const LANG_CHOICES: LangChoice[] = ['auto', 'ru', 'en'];

/** The UI language: the browser's, or one chosen (each named in its own language). */
export function LanguageSelect({ value, onChange }: { value: LangChoice; onChange(choice: LangChoice): void }) {
  return (
    <label class="field language-field">
      <span>{t('language.label')}</span>
      <select class="language-select" value={value} onChange={(e) => onChange((e.currentTarget as HTMLSelectElement).value as LangChoice)}>
        {LANG_CHOICES.map((c) => (
          <option key={c} value={c} lang={c === 'auto' ? undefined : c}>
            {t(`language.${c}` as Key)}
          </option>
        ))}
      </select>
    </label>
  );
}
