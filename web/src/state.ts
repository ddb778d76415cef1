// Application state as signals, and the actions that change it.
import { batch, signal } from '@preact/signals';
import * as api from './api';
import { ApiError, type DiscussionInfo, type SessionList, type UserInfo } from './api';
import { t, tn } from './i18n';

/** `starting`: asking the node who we are; `unreachable`: that failed for a reason other than 401/403. */
export type Phase = 'starting' | 'unreachable' | 'signed-out' | 'signed-in';

export const phase = signal<Phase>('starting');
export const me = signal<UserInfo | null>(null);
export const startError = signal<string>('');
/** Why the sign-in form is shown, when the node refused the session at start (e.g. a locked account). */
export const signInNotice = signal<string>('');
/** A problem to show in the shell's alert region (for example a failed sign-out). */
export const shellError = signal<string>('');

export const discussions = signal<DiscussionInfo[] | null>(null);
export const discussionsError = signal<string>('');
export const selected = signal<string | null>(null);

export const sessions = signal<SessionList | null>(null);
export const sessionsError = signal<string>('');

/** The text to show for a failed call (always rendered as text, never as HTML). */
export function errorText(error: unknown): string {
  if (!(error instanceof ApiError)) return error instanceof Error ? error.message : String(error);
  switch (error.code) {
    case 'invalid_credentials':
      return t('error.invalid_credentials');
    case 'account_locked':
      return t('error.account_locked');
    case 'throttled':
      return error.retryAfterMs === null
        ? t('error.throttled_later')
        : tn('error.throttled', Math.max(1, Math.ceil(error.retryAfterMs / 1000)));
    case 'bad_request':
      return t('error.bad_request', { message: error.message });
    case 'network':
      return t('error.network');
    case 'forbidden':
      return error.message ? t('error.forbidden', { message: error.message }) : t('error.forbidden_plain');
    case 'not_found':
      return t('error.not_found');
    case 'conflict':
      return t('error.conflict');
    case 'unavailable':
      return t('error.unavailable');
    case 'bad_response':
      return t('error.bad_response');
  }
  if (error.code.startsWith('http_')) return t('error.unknown', { status: error.status });
  return error.message || t('error.unknown', { status: error.status });
}

/** The chat's start and stop (registered by main.tsx, so unit tests of this module stay offline). */
export interface ChatHooks {
  start(user: UserInfo): void;
  stop(): void;
}
let chatHooks: ChatHooks | null = null;
export function setChatHooks(hooks: ChatHooks | null): void {
  chatHooks = hooks;
}

/** Bumped whenever the user changes, so late answers for the previous user are dropped. */
let generation = 0;

function resetUser(): void {
  generation += 1;
  chatHooks?.stop();
  batch(() => {
    me.value = null;
    shellError.value = '';
    discussions.value = null;
    discussionsError.value = '';
    selected.value = null;
    sessions.value = null;
    sessionsError.value = '';
  });
}

/** Forgets the signed-in user and shows the sign-in form. */
export function toSignedOut(): void {
  batch(() => {
    resetUser();
    phase.value = 'signed-out';
  });
}

function toSignedIn(user: UserInfo): void {
  batch(() => {
    resetUser();
    signInNotice.value = '';
    me.value = user;
    phase.value = 'signed-in';
  });
  void loadDiscussions();
  chatHooks?.start(user);
}

/** At start: is the cookie session alive? */
export async function start(): Promise<void> {
  api.setUnauthorizedHandler(() => {
    if (phase.value !== 'signed-out') toSignedOut();
  });
  batch(() => {
    phase.value = 'starting';
    startError.value = '';
    signInNotice.value = '';
  });
  try {
    toSignedIn(await api.whoami());
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      if (e.status === 403) signInNotice.value = errorText(e);
      toSignedOut();
    } else {
      batch(() => {
        startError.value = errorText(e);
        phase.value = 'unreachable';
      });
    }
  }
}

/** Signs in; resolves to the error text to show, or `''` on success. */
export async function signIn(login: string, password: string): Promise<string> {
  if (login.trim() === '' || password === '') return t('signin.missing');
  try {
    toSignedIn(await api.login(login.trim(), password));
    return '';
  } catch (e) {
    return errorText(e);
  }
}

export async function signOut(): Promise<void> {
  try {
    await api.logout();
  } catch (e) {
    // Without a node that heard us the cookie stays alive: say so instead of pretending.
    if (e instanceof ApiError && (e.status === 0 || e.status >= 500)) {
      shellError.value = errorText(e);
      return;
    }
  }
  toSignedOut();
}

export async function loadDiscussions(): Promise<void> {
  const mine = generation;
  discussionsError.value = '';
  try {
    const list = await api.listDiscussions();
    if (mine !== generation) return;
    // The list leaves out group members; keep those already fetched.
    const before = new Map((discussions.value ?? []).map((d) => [d.id, d]));
    discussions.value = [...list]
      .map((d) => (d.members.length === 0 && before.get(d.id)?.members.length ? { ...d, members: before.get(d.id)!.members } : d))
      .sort((a, b) => b.last_activity_at - a.last_activity_at);
  } catch (e) {
    if (mine === generation) discussionsError.value = errorText(e);
  }
}

export async function loadSessions(): Promise<void> {
  const mine = generation;
  sessionsError.value = '';
  try {
    const list = await api.listSessions();
    if (mine === generation) sessions.value = list;
  } catch (e) {
    if (mine === generation) sessionsError.value = errorText(e);
  }
}

/** Ends one of my sessions; ending the current one signs out. */
export async function endSession(id: string): Promise<void> {
  if (sessions.value?.current === id) {
    await signOut();
    return;
  }
  const mine = generation;
  sessionsError.value = '';
  try {
    await api.revokeSession(id);
  } catch (e) {
    if (mine === generation) sessionsError.value = errorText(e);
    return;
  }
  if (mine === generation) await loadSessions();
}

/** How a discussion is named in the list: a dialog by the other member's login. */
export function discussionName(d: DiscussionInfo, myId: string | undefined): string {
  if (d.kind === 'dialog') {
    const other = d.members.find((m) => m.user !== myId)?.user ?? myId ?? '';
    const login = other.split('@')[0];
    if (login) return login;
  }
  if (d.title) return d.title;
  if (d.object) return `${d.object.object_type} ${d.object.object_id}`;
  return d.id;
}

/** Puts one discussion (new or changed) into the list, kept in order of last activity. */
export function upsertDiscussion(d: DiscussionInfo): void {
  const list = discussions.value ?? [];
  const known = list.some((x) => x.id === d.id);
  discussions.value = (known ? list.map((x) => (x.id === d.id ? d : x)) : [...list, d]).sort(
    (a, b) => b.last_activity_at - a.last_activity_at,
  );
}
