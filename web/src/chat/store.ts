// Chat state: loaded timelines, the outbox, typing, presence and preferences,
// fed by the live socket and the node's answers. Unread and mention counts
// come only from the node (`get_discussion` after each change).
import { batch, signal } from '@preact/signals';
import * as api from '../api';
import type { DiscussionEvent, DiscussionInfo, UserInfo } from '../api';
import { applyEvents, applyHistory, emptyTimeline, type Timeline } from './reducer';
import { Outbox, type OutboxItem } from './outbox';
import { Socket, type SocketState } from './socket';
import { applyLanguageChoice, type LangChoice } from '../i18n';

export const PAGE = 50;

export interface Prefs {
  /** `enter`: Enter sends (Shift+Enter breaks the line); `ctrl_enter`: Ctrl+Enter sends. */
  send_key: 'enter' | 'ctrl_enter';
  /** The notification chime. */
  sound: boolean;
  /** Desktop notifications while the tab is hidden (the browser's permission asked on a click). */
  desktop: boolean;
  /** The UI language, or `auto` for the browser's. */
  language: LangChoice;
}

const DEFAULT_PREFS: Prefs = { send_key: 'enter', sound: true, desktop: false, language: 'auto' };
/** This browser's copy of the language choice, so the page (and the sign-in form) paints in it before the node answers. */
export const LANG_KEY = 'veche.lang';

export const timelines = signal<Record<string, Timeline>>({});
export const outboxItems = signal<OutboxItem[]>([]);
/** discussion → user → when their indicator lapses (ms). */
export const typingBy = signal<Record<string, Record<string, number>>>({});
/** user id → presence state (`available`, `away`, `dnd`, `offline`, `invisible`). */
export const presence = signal<Record<string, string>>({});
export const prefs = signal<Prefs>(DEFAULT_PREFS);
/** user id → their status text. */
export const statusTexts = signal<Record<string, string>>({});
export const connection = signal<SocketState>('closed');
/** A message to scroll to once its discussion's view is open (from a search result). */
export const pendingJump = signal<{ discussion: string; message: string } | null>(null);
export function requestJump(discussion: string, message: string): void {
  pendingJump.value = { discussion, message };
}
/** The last error of a chat action, for the pane's alert region. */
export const chatError = signal<string>('');

/** What the store needs from the app state (kept in `state.ts`). */
export interface Host {
  me(): UserInfo | null;
  discussions(): DiscussionInfo[] | null;
  setDiscussions(list: DiscussionInfo[]): void;
  reloadDiscussions(): Promise<void>;
  signedOut(): void;
  errorText(e: unknown): string;
}

let host: Host | null = null;
let socket: Socket | null = null;
let outbox: Outbox | null = null;
let storedPrefs: Record<string, unknown> = {};
let session = 0;
const loading = new Set<string>();
const syncing = new Map<string, Promise<void>>();
const resync = new Set<string>();
const refreshTimers = new Map<string, ReturnType<typeof setTimeout>>();
let retryTimer: ReturnType<typeof setInterval> | null = null;

export function sortDiscussions(list: DiscussionInfo[]): DiscussionInfo[] {
  return [...list].sort((a, b) => b.last_activity_at - a.last_activity_at || (a.id < b.id ? -1 : 1));
}

function setTimeline(tl: Timeline): void {
  timelines.value = { ...timelines.value, [tl.discussion]: tl };
}

/** Starts the chat for the signed-in user: outbox, preferences, live socket. */
export async function startChat(h: Host, user: UserInfo): Promise<void> {
  stopChat();
  host = h;
  const mine = ++session;
  socket = new Socket({
    onEvent: (e) => onEvent(e),
    onState: (s) => {
      connection.value = s;
      if (s === 'open') void onConnected();
    },
    onSessionEnded: () => host?.signedOut(),
  });
  socket.start();
  addEventListener('online', flushSoon);
  retryTimer = setInterval(flushSoon, 10_000);
  void loadPrefs(mine);
  try {
    const box = await Outbox.open(`veche-outbox-${user.id}`);
    if (mine !== session) {
      box.close();
      return;
    }
    outbox = box;
    await refreshOutbox();
    flushSoon();
  } catch (e) {
    chatError.value = h.errorText(e);
  }
}

export function stopChat(): void {
  session += 1;
  socket?.stop();
  socket = null;
  outbox?.close();
  outbox = null;
  removeEventListener('online', flushSoon);
  if (retryTimer) clearInterval(retryTimer);
  retryTimer = null;
  for (const t of refreshTimers.values()) clearTimeout(t);
  refreshTimers.clear();
  loading.clear();
  syncing.clear();
  resync.clear();
  watched.clear();
  storedPrefs = {};
  batch(() => {
    timelines.value = {};
    outboxItems.value = [];
    typingBy.value = {};
    presence.value = {};
    prefs.value = DEFAULT_PREFS;
    statusTexts.value = {};
    connection.value = 'closed';
    chatError.value = '';
  });
}

async function loadPrefs(mine: number): Promise<void> {
  try {
    const p = await api.getPreferences();
    if (mine !== session) return;
    storedPrefs = p;
    // A choice stored on the node follows the user; without one, this browser's stands.
    const language = p.language === undefined ? localLanguage() : applyLanguageChoice(p.language);
    if (p.language !== undefined) rememberLanguage(language);
    prefs.value = {
      send_key: p.send_key === 'ctrl_enter' ? 'ctrl_enter' : 'enter',
      sound: p.sound !== false,
      desktop: p.desktop === true,
      language,
    };
  } catch {
    // Keep the defaults; the node may answer later.
  }
}

/** The language choice this browser remembers. */
export function localLanguage(): LangChoice {
  try {
    const c = localStorage.getItem(LANG_KEY);
    return c === 'ru' || c === 'en' ? c : 'auto';
  } catch {
    return 'auto';
  }
}

function rememberLanguage(choice: LangChoice): void {
  try {
    if (choice === 'auto') localStorage.removeItem(LANG_KEY);
    else localStorage.setItem(LANG_KEY, choice);
  } catch {
    // Storage may be off; the node still has the choice.
  }
}

/** At page start: the language this browser last used, before anyone signs in. */
export function applyLocalLanguage(): void {
  applyLanguageChoice(localLanguage());
}

/** Switches the UI language in this browser only (the sign-in form, before anyone is signed in). */
export function setLocalLanguage(choice: LangChoice): void {
  applyLanguageChoice(choice);
  rememberLanguage(choice);
}

/** Switches the UI language; stored on the node so it follows the user, and in this browser for the sign-in form. */
export async function setLanguageChoice(choice: LangChoice): Promise<void> {
  setLocalLanguage(choice);
  await setPref('language', choice);
}

/** Changes the send key; stored on the node so it follows the user. */
export async function setSendKey(key: Prefs['send_key']): Promise<void> {
  await setPref('send_key', key);
}

/** Changes one preference; the node stores the whole object so it follows the user. */
export async function setPref<K extends keyof Prefs>(key: K, value: Prefs[K]): Promise<void> {
  prefs.value = { ...prefs.value, [key]: value };
  storedPrefs = { ...storedPrefs, [key]: value };
  try {
    await api.setPreferences(storedPrefs);
  } catch (e) {
    chatError.value = host?.errorText(e) ?? String(e);
  }
}

async function onConnected(): Promise<void> {
  const mine = session;
  // Missed events while away: the list from the node, the open timelines by sync.
  await host?.reloadDiscussions();
  if (mine !== session) return;
  for (const id of Object.keys(timelines.value)) void syncDiscussion(id);
  flushSoon();
  subscribePresence();
  for (const id of watched) socket?.request({ method: 'watch', discussion: id, watch: true }).catch(() => {});
}

const watched = new Set<string>();
/** Live events of an object discussion while it is open (on this connection; renewed after a reconnect). */
export function watchDiscussion(id: string, on: boolean): void {
  if (on) watched.add(id);
  else watched.delete(id);
  socket?.request({ method: 'watch', discussion: id, watch: on }).catch(() => {});
}

/** Presence of the people in my dialogs (contacts come anyway; this asks for a snapshot). */
export function subscribePresence(): void {
  const list = host?.discussions() ?? [];
  const myId = host?.me()?.id;
  const users = new Set<string>();
  for (const d of list) if (d.kind === 'dialog') for (const m of d.members) if (m.user !== myId) users.add(m.user);
  if (!socket || users.size === 0) return;
  socket
    .request<{ users?: api.PresenceInfo[] }>({ method: 'get_presence', users: [...users].slice(0, 500), subscribe: true })
    .then((r) => applyPresence(r.users ?? []))
    .catch(() => {});
}

function applyPresence(users: api.PresenceInfo[]): void {
  if (users.length === 0) return;
  const next = { ...presence.value };
  const texts = { ...statusTexts.value };
  for (const u of users) {
    next[u.user] = u.state;
    texts[u.user] = u.status_text ?? '';
  }
  batch(() => {
    presence.value = next;
    statusTexts.value = texts;
  });
}

function onEvent(e: { type: string } & Record<string, unknown>): void {
  switch (e.type) {
    case 'discussion': {
      const event = e.event as DiscussionEvent;
      onDiscussionEvent(event);
      break;
    }
    case 'discussion_removed': {
      const id = e.discussion as string;
      const list = host?.discussions();
      if (list) host?.setDiscussions(list.filter((d) => d.id !== id));
      const { [id]: _gone, ...rest } = timelines.value;
      timelines.value = rest;
      break;
    }
    case 'typing': {
      const d = e.discussion as string;
      const user = e.user as string;
      if (user === host?.me()?.id) break;
      const forD = { ...(typingBy.value[d] ?? {}) };
      if (e.typing) forD[user] = Date.now() + Number(e.expires_in_ms ?? 6000);
      else delete forD[user];
      typingBy.value = { ...typingBy.value, [d]: forD };
      if (e.typing) setTimeout(expireTyping, Number(e.expires_in_ms ?? 6000) + 50);
      break;
    }
    case 'presence':
      applyPresence((e.users as api.PresenceInfo[]) ?? []);
      break;
    case 'session_ended':
      host?.signedOut();
      break;
  }
}

function expireTyping(): void {
  const now = Date.now();
  const next: Record<string, Record<string, number>> = {};
  let changed = false;
  for (const [d, users] of Object.entries(typingBy.value)) {
    const kept: Record<string, number> = {};
    for (const [u, until] of Object.entries(users)) {
      if (until > now) kept[u] = until;
      else changed = true;
    }
    next[d] = kept;
  }
  if (changed) typingBy.value = next;
}

/** Who is typing in a discussion now (user ids). */
export function typingIn(discussion: string): string[] {
  const now = Date.now();
  return Object.entries(typingBy.value[discussion] ?? {})
    .filter(([, until]) => until > now)
    .map(([u]) => u);
}

/** Called for every live `message_posted` (notifications listen here). */
export const messageListeners = new Set<(event: DiscussionEvent) => void>();

/** A request on the live connection (tied to it: activity, presence subscriptions). */
export function socketRequest<T>(request: Record<string, unknown>): Promise<T> {
  if (!socket) return Promise.reject(new api.ApiError(0, 'network', 'not connected'));
  return socket.request<T>(request);
}

function onDiscussionEvent(event: DiscussionEvent): void {
  const id = event.discussion;
  if (event.change.type === 'message_posted') for (const l of messageListeners) l(event);
  // A message from someone ends their typing indicator.
  if (event.change.type === 'message_posted' && typingBy.value[id]?.[event.actor]) {
    const { [event.actor]: _done, ...rest } = typingBy.value[id];
    typingBy.value = { ...typingBy.value, [id]: rest };
  }
  const tl = timelines.value[id];
  if (tl?.loaded) {
    const { timeline, gap } = applyEvents(tl, [event]);
    if (timeline !== tl) setTimeline(timeline);
    if (gap) void syncDiscussion(id);
  }
  refreshSoon(id);
}

/** Asks the node for one discussion's list entry (counts, title, members) shortly. */
export function refreshSoon(id: string, delay = 150): void {
  if (refreshTimers.has(id)) return;
  const mine = session;
  refreshTimers.set(
    id,
    setTimeout(async () => {
      refreshTimers.delete(id);
      try {
        const d = await api.getDiscussion(id);
        if (mine !== session || !host) return;
        const list = host.discussions() ?? [];
        const known = list.some((x) => x.id === id);
        host.setDiscussions(sortDiscussions(known ? list.map((x) => (x.id === id ? d : x)) : [...list, d]));
        if (!known) subscribePresence();
      } catch (e) {
        if (e instanceof api.ApiError && e.code === 'not_found' && host) {
          host.setDiscussions((host.discussions() ?? []).filter((x) => x.id !== id));
        }
      }
    }, delay),
  );
}

/** Loads the newest page of a discussion when it is opened the first time. */
export async function openTimeline(id: string): Promise<void> {
  const tl = timelines.value[id];
  if (tl?.loaded || loading.has(id)) return;
  loading.add(id);
  const mine = session;
  if (!tl) setTimeline(emptyTimeline(id));
  try {
    const page = await api.history(id, null, PAGE);
    if (mine !== session) return;
    setTimeline(applyHistory(timelines.value[id] ?? emptyTimeline(id), page));
    // Whatever happened between the page and now.
    void syncDiscussion(id);
  } catch (e) {
    if (mine === session) chatError.value = host?.errorText(e) ?? String(e);
  } finally {
    loading.delete(id);
  }
}

/** The next older page (on scroll up). */
export async function loadOlder(id: string): Promise<void> {
  const tl = timelines.value[id];
  if (!tl?.loaded || !tl.more || tl.oldest === null || tl.oldest <= 1 || loading.has(id)) return;
  loading.add(id);
  const mine = session;
  try {
    const page = await api.history(id, tl.oldest, PAGE);
    if (mine !== session) return;
    const now = timelines.value[id];
    if (now) setTimeline(applyHistory(now, page.events.length === 0 ? { events: [], more: false } : page));
  } catch (e) {
    if (mine === session) chatError.value = host?.errorText(e) ?? String(e);
  } finally {
    loading.delete(id);
  }
}

export function isLoading(id: string): boolean {
  return loading.has(id);
}

/** Fetches the events after the timeline's cursor (after a gap or a reconnect). */
export function syncDiscussion(id: string): Promise<void> {
  const running = syncing.get(id);
  if (running) {
    // It may have asked before the event that called for this sync: ask again after it.
    resync.add(id);
    return running;
  }
  const mine = session;
  const run = (async () => {
    try {
      for (let round = 0; round < 20; round += 1) {
        const tl = timelines.value[id];
        if (!tl?.loaded) return;
        const page = await api.sync([{ discussion: id, seq: tl.cursor }]);
        if (mine !== session) return;
        const now = timelines.value[id];
        if (!now) return;
        const { timeline } = applyEvents(now, page.events);
        if (timeline !== now) setTimeline(timeline);
        if (!page.more || timeline.cursor === now.cursor) return;
      }
    } catch {
      // The next event or reconnect syncs again.
    } finally {
      syncing.delete(id);
      if (resync.delete(id) && mine === session) void syncDiscussion(id);
    }
  })();
  syncing.set(id, run);
  return run;
}

async function refreshOutbox(): Promise<void> {
  const box = outbox;
  if (!box) return;
  try {
    const items = await box.list();
    if (box === outbox) outboxItems.value = items;
  } catch {
    // Closed meanwhile (signed out).
  }
}

let flushQueued = false;
/** Sends what waits in the outbox (soon, once). */
export function flushSoon(): void {
  if (flushQueued) return;
  flushQueued = true;
  queueMicrotask(() => {
    flushQueued = false;
    void flush();
  });
}

async function flush(): Promise<void> {
  const box = outbox;
  if (!box) return;
  const mine = session;
  try {
    await box.flush(api.send, (item, sent) => {
      if (mine !== session) return;
      const tl = timelines.value[item.discussion];
      if (tl?.loaded && tl.cursor < sent.seq) void syncDiscussion(item.discussion);
      void refreshOutbox();
    });
  } catch {
    // The database closed (signed out) or failed; the items stay for the next start.
  }
  if (mine === session) await refreshOutbox();
}

/** Writes a message: into the outbox first, then to the node. */
export async function sendMessage(discussion: string, text: string, replyTo?: string, files: string[] = []): Promise<void> {
  if (!outbox) throw new Error('outbox not open');
  await outbox.add(discussion, text, replyTo, Date.now(), files);
  await refreshOutbox();
  flushSoon();
}

export async function retryOutbox(clientMsgId: string): Promise<void> {
  await outbox?.retry(clientMsgId);
  await refreshOutbox();
  flushSoon();
}

export async function discardOutbox(clientMsgId: string): Promise<void> {
  await outbox?.remove(clientMsgId);
  await refreshOutbox();
}

/** Runs an action on the node; a failure is shown in the pane. */
export async function act(run: () => Promise<unknown>): Promise<boolean> {
  chatError.value = '';
  try {
    await run();
    return true;
  } catch (e) {
    chatError.value = host?.errorText(e) ?? String(e);
    return false;
  }
}

const readSent = new Map<string, number>();
/** Called after my read marker moved in a discussion (push notifications of it are closed). */
export const readListeners = new Set<(discussion: string) => void>();
/** Moves my read marker to `seq` (only forward; the caller checked visibility). */
export async function markRead(discussion: string, seq: number): Promise<void> {
  const d = host?.discussions()?.find((x) => x.id === discussion);
  const done = Math.max(readSent.get(discussion) ?? 0, d?.read_seq ?? 0);
  if (seq <= done) return;
  readSent.set(discussion, seq);
  try {
    await api.markRead(discussion, seq);
    refreshSoon(discussion, 0);
    for (const l of readListeners) l(discussion);
  } catch {
    readSent.delete(discussion);
  }
}

let typingSentAt = 0;
let typingIn_: string | null = null;
/** Tells the others I am typing (at most every 3 s), or that I stopped. */
export function reportTyping(discussion: string, on: boolean): void {
  const now = Date.now();
  if (on) {
    if (typingIn_ === discussion && now - typingSentAt < 3000) return;
    typingIn_ = discussion;
    typingSentAt = now;
  } else {
    if (typingIn_ !== discussion) return;
    typingIn_ = null;
    typingSentAt = 0;
  }
  api.typing(discussion, on).catch(() => {});
}
