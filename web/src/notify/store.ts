// Presence and notifications: my status, the per-discussion levels (the
// node's `notifications` / `set_notifications`, the same ones push obeys),
// the chime and desktop notifications for live messages, and activity/idle
// reports on the live connection.
import { signal } from '@preact/signals';
import * as api from '../api';
import type { DiscussionEvent, Message, NotificationLevel, NotificationSetting, PresenceChoice, UserInfo } from '../api';
import { messageListeners, prefs, readListeners, presence, setPref, socketRequest, statusTexts, timelines } from '../chat/store';
import { loginOf } from '../chat/view';
import { t } from '../i18n';
import { discussionName, discussions, me, selected } from '../state';
import { decide } from './decide';
import { chime, unlockAudioOnGesture } from './sound';
import { closeRead, registerWorker } from './push';

export const myChoice = signal<PresenceChoice>('auto');
export const levels = signal<Record<string, NotificationSetting>>({});
export const notifyError = signal('');

let lastSoundAt = 0;
let running = false;
const IDLE_MS = 60_000;
let lastInput = Date.now();
let idleReported = false;
let idleTimer: ReturnType<typeof setInterval> | null = null;

function onMessage(event: DiscussionEvent): void {
  const user = me.value;
  if (!user) return;
  const m = (event.change as { message: Message }).message;
  const d = discussions.value?.find((x) => x.id === event.discussion);
  const setting = levels.value[event.discussion];
  const replied = m.reply_to ? timelines.value[event.discussion]?.messages.find((x) => x.id === m.reply_to) : undefined;
  const focused = document.visibilityState === 'visible' && document.hasFocus();
  const now = Date.now();
  const decision = decide({
    kind: d?.kind ?? 'dialog',
    level: setting?.level ?? 'default',
    mutedUntil: setting?.muted_until,
    now,
    mention: m.mentions.includes(user.id) || replied?.author === user.id,
    own: m.author === user.id,
    choice: myChoice.value,
    focused,
    open: selected.value === event.discussion,
    soundOn: prefs.value.sound,
    desktopOn: prefs.value.desktop && typeof Notification !== 'undefined' && Notification.permission === 'granted',
    lastSoundAt,
  });
  if (decision.sound && chime()) lastSoundAt = now;
  if (decision.desktop) {
    try {
      const title = d ? discussionName(d, user.id) : loginOf(m.author);
      const n = new Notification(title, {
        body: `${loginOf(m.author)}: ${(m.text ?? '').slice(0, 200)}`,
        tag: event.discussion,
        // The chime already played: the system need not make its own sound.
        silent: decision.sound,
      });
      n.onclick = () => {
        focus();
        selected.value = event.discussion;
        n.close();
      };
    } catch {
      // Notifications from a page need a service worker on some platforms.
    }
  }
}

function onInput(): void {
  lastInput = Date.now();
  if (idleReported) {
    idleReported = false;
    socketRequest({ method: 'activity', idle_ms: 0 }).catch(() => {});
  }
}

function checkIdle(): void {
  const idle = Date.now() - lastInput;
  if (!idleReported && idle >= IDLE_MS) {
    idleReported = true;
    socketRequest({ method: 'activity', idle_ms: idle }).catch(() => (idleReported = false));
  }
}

function onVisibility(): void {
  if (document.visibilityState === 'visible') onInput();
}

/** Own presence events tell my choice and text (set on another device, or restored at start). */
function followOwnPresence(): void {
  const id = me.value?.id;
  if (!id) return;
  const state = presence.value[id];
  if (state === 'dnd' || state === 'invisible') myChoice.value = state;
  else if (state === 'available' && myChoice.value !== 'auto') myChoice.value = 'auto';
}

let unsubscribe: (() => void) | null = null;

export function startNotify(_user: UserInfo): void {
  stopNotify();
  running = true;
  messageListeners.add(onMessage);
  readListeners.add(closeRead);
  registerWorker((d) => (selected.value = d));
  // A push notification clicked while no tab was open: `/#d=<discussion>`.
  const m = /^#d=(.+)$/.exec(location.hash);
  if (m) {
    selected.value = decodeURIComponent(m[1]);
    history.replaceState(null, '', location.pathname);
  }
  unsubscribe = presence.subscribe(followOwnPresence);
  unlockAudioOnGesture();
  addEventListener('pointerdown', onInput);
  addEventListener('keydown', onInput);
  addEventListener('pointermove', onInput, { passive: true });
  document.addEventListener('visibilitychange', onVisibility);
  idleTimer = setInterval(checkIdle, 15_000);
  void loadLevels();
}

export function stopNotify(): void {
  if (!running) return;
  running = false;
  messageListeners.delete(onMessage);
  readListeners.delete(closeRead);
  unsubscribe?.();
  unsubscribe = null;
  removeEventListener('pointerdown', onInput);
  removeEventListener('keydown', onInput);
  removeEventListener('pointermove', onInput);
  document.removeEventListener('visibilitychange', onVisibility);
  if (idleTimer) clearInterval(idleTimer);
  idleTimer = null;
  levels.value = {};
  myChoice.value = 'auto';
  notifyError.value = '';
}

async function loadLevels(): Promise<void> {
  try {
    const list = await api.notificationSettings();
    levels.value = Object.fromEntries(list.map((s) => [s.discussion, s]));
  } catch {
    // Defaults until the next start.
  }
}

export async function setLevel(discussion: string, level: NotificationLevel, mutedUntil?: number): Promise<boolean> {
  notifyError.value = '';
  try {
    await api.setNotifications(discussion, level, mutedUntil);
    levels.value = { ...levels.value, [discussion]: { discussion, level, muted_until: mutedUntil } };
    return true;
  } catch (e) {
    notifyError.value = e instanceof Error ? e.message : String(e);
    return false;
  }
}

export async function setStatus(choice: PresenceChoice, text: string): Promise<boolean> {
  notifyError.value = '';
  try {
    await api.setPresence(choice, text);
    myChoice.value = choice;
    const id = me.value?.id;
    if (id) statusTexts.value = { ...statusTexts.value, [id]: text };
    return true;
  } catch (e) {
    notifyError.value = e instanceof Error ? e.message : String(e);
    return false;
  }
}

/** Turns desktop notifications on (asking the browser's permission: call from a click) or off. */
export async function setDesktop(on: boolean): Promise<void> {
  if (on && typeof Notification !== 'undefined' && Notification.permission !== 'granted') {
    const answer = await Notification.requestPermission();
    if (answer !== 'granted') {
      notifyError.value = t('notify.denied');
      on = false;
    }
  }
  await setPref('desktop', on);
}
