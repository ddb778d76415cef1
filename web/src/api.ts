// Every call to the node's HTTP API goes through this module. The session
// lives in an HttpOnly cookie; the page only sends its device id.
import { deviceId, deviceName } from './device';
import type { FileInfo, UploadInfo } from './files/upload';
import type { FilePolicy } from './files/policy';

export type { FileInfo };

/** Epoch milliseconds, UTC. */
export type Millis = number;

export interface UserInfo {
  id: string;
  login: string;
  display_name: string;
  email: string;
  department: string;
  admin: boolean;
  locked: boolean;
  created_at: Millis;
}

export interface SessionInfo {
  id: string;
  device_id: string;
  device_name: string;
  created_at: Millis;
  last_seen_at: Millis;
  expires_at: Millis;
}

export interface SessionList {
  sessions: SessionInfo[];
  current: string;
}

export type DiscussionKind = 'dialog' | 'group' | 'object';

export interface ObjectRef {
  application: string;
  object_type: string;
  object_id: string;
}

export interface Member {
  user: string;
  role: 'member' | 'owner';
}

export interface DiscussionInfo {
  id: string;
  kind: DiscussionKind;
  title: string;
  object: ObjectRef | null;
  members: Member[];
  last_seq: number;
  last_activity_at: Millis;
  read_seq: number;
  unread: number;
  mentions: number;
  following: boolean;
}

/**
 * Any failed call. `status` is the HTTP status (0 when the node could not be
 * reached), `code` the node's error code (`invalid_credentials`, `throttled`,
 * …, or `network` / `bad_response` / `http_<status>` made here), `message` is
 * untrusted text for display as text only.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfterMs: number | null;
  /** For a policy refusal (`forbidden`): the setting that refused, e.g. `files.max_size_mb`. */
  readonly rule: string | null;

  constructor(status: number, code: string, message: string, retryAfterMs: number | null = null, rule: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
    this.rule = rule;
  }
}

type Listener = (error: ApiError) => void;
let onUnauthorized: Listener | null = null;

/** Called on a 401 from any call that needs a session (not from `login`). */
export function setUnauthorizedHandler(listener: Listener | null): void {
  onUnauthorized = listener;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Builds the error for a response whose status is not 2xx (or whose body carries `error`). */
export function errorFromBody(status: number, statusText: string, body: unknown): ApiError {
  const error = isObject(body) ? body.error : undefined;
  if (isObject(error) && typeof error.code === 'string') {
    const message = typeof error.message === 'string' ? error.message : '';
    const retry = error.retry_after_ms ?? (isObject(body) ? body.retry_after_ms : undefined);
    const retryAfterMs = typeof retry === 'number' && Number.isFinite(retry) && retry >= 0 ? retry : null;
    const rule = typeof error.rule === 'string' ? error.rule : null;
    return new ApiError(status, error.code, message, retryAfterMs, rule);
  }
  return new ApiError(status, `http_${status}`, statusText || `HTTP ${status}`);
}

interface CallOptions {
  /** A 401 means "not signed in" and ends the session in the UI. */
  auth?: boolean;
}

async function call(method: 'GET' | 'POST', path: string, body?: unknown, options: CallOptions = {}): Promise<unknown> {
  const headers: Record<string, string> = {
    Accept: 'application/json',
    'Veche-Device': deviceId(),
  };
  const init: RequestInit = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  let parsed: unknown = undefined;
  let text = '';
  try {
    text = await response.text();
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!response.ok || (isObject(parsed) && isObject(parsed.error))) {
    const error = errorFromBody(response.status, response.statusText, parsed);
    if (error.status === 401 && options.auth !== false) onUnauthorized?.(error);
    throw error;
  }
  if (parsed === undefined && text !== '') {
    throw new ApiError(response.status, 'bad_response', 'The node sent a response that is not JSON');
  }
  return parsed;
}

function expectType<T>(value: unknown, type: string): T {
  // Replies carry their kind in `kind` (docs/protocol.md); events, in `type`.
  if (!isObject(value) || value.kind !== type) {
    throw new ApiError(200, 'bad_response', `Expected a "${type}" response`);
  }
  return value as T;
}

/** Any request of the protocol over `POST /api/v1/rpc`, expecting a reply of `kind`. */
export async function rpc<T>(request: Record<string, unknown>, type: string): Promise<T> {
  return expectType<T>(await call('POST', '/api/v1/rpc', request), type);
}

export async function login(loginName: string, password: string): Promise<UserInfo> {
  const body = await call(
    'POST',
    '/api/v1/login',
    {
      login: loginName,
      password,
      device_id: deviceId(),
      device_name: deviceName(),
      cookie: true,
    },
    { auth: false },
  );
  if (!isObject(body) || !isObject(body.user)) {
    throw new ApiError(200, 'bad_response', 'Expected a user');
  }
  return body.user as unknown as UserInfo;
}

export async function logout(): Promise<void> {
  await call('POST', '/api/v1/logout', {});
}

export async function whoami(): Promise<UserInfo> {
  const { user } = await rpc<{ user: unknown }>({ method: 'whoami' }, 'me');
  if (!isObject(user)) throw new ApiError(200, 'bad_response', 'Expected a user');
  return user as unknown as UserInfo;
}

export async function listSessions(): Promise<SessionList> {
  const r = await rpc<SessionList>({ method: 'list_sessions' }, 'sessions');
  return { sessions: r.sessions ?? [], current: r.current };
}

export async function revokeSession(session: string): Promise<void> {
  await rpc({ method: 'revoke_session', session }, 'done');
}

export async function listDiscussions(): Promise<DiscussionInfo[]> {
  const body = expectType<{ discussions: DiscussionInfo[] }>(await call('GET', '/api/v1/discussions'), 'discussions');
  return body.discussions ?? [];
}

// Stage 2: discussions, messages and people (docs/protocol.md).

export interface Action {
  id: string;
  label: string;
}

export interface Reaction {
  emoji: string;
  /** User ids, in the order they reacted. */
  users: string[];
}

export interface Message {
  id: string;
  discussion: string;
  seq: number;
  author: string;
  text?: string;
  data?: unknown;
  actions: Action[];
  reply_to?: string;
  mentions: string[];
  reactions: Reaction[];
  created_at: Millis;
  edited_at?: Millis;
  version: number;
  deleted: boolean;
  files?: FileInfo[];
}

export type Change =
  | { type: 'created'; kind: DiscussionKind; title: string }
  | { type: 'message_posted'; message: Message }
  | { type: 'message_edited'; message_id: string; text?: string; version: number }
  | { type: 'message_deleted'; message_id: string }
  | { type: 'reaction_added'; message_id: string; emoji: string }
  | { type: 'reaction_removed'; message_id: string; emoji: string }
  | { type: 'title_changed'; title: string }
  | { type: 'members_added'; users: string[] }
  | { type: 'member_removed'; user: string }
  | { type: string };

export interface DiscussionEvent {
  discussion: string;
  seq: number;
  at: Millis;
  actor: string;
  change: Change;
}

export interface EventPage {
  events: DiscussionEvent[];
  more: boolean;
}

export interface MessageVersion {
  version: number;
  text: string;
  at: Millis;
}

export interface DirectoryEntry {
  id: string;
  login: string;
  display_name: string;
  department: string;
}

export interface PresenceInfo {
  user: string;
  state: string;
  status_text?: string;
}

export interface SendRequest {
  discussion: string;
  client_msg_id: string;
  text: string;
  reply_to?: string;
  files?: string[];
}

export async function history(discussion: string, before: number | null, limit = 50): Promise<EventPage> {
  const r: Record<string, unknown> = { method: 'history', discussion, limit };
  if (before !== null) r.before = before;
  const page = await rpc<EventPage>(r, 'events');
  return { events: page.events ?? [], more: !!page.more };
}

export async function sync(cursors: { discussion: string; seq: number }[]): Promise<EventPage> {
  const page = await rpc<EventPage>({ method: 'sync', cursors }, 'events');
  return { events: page.events ?? [], more: !!page.more };
}

export async function getDiscussion(discussion: string): Promise<DiscussionInfo> {
  return (await rpc<{ discussion: DiscussionInfo }>({ method: 'get_discussion', discussion }, 'discussion')).discussion;
}

export async function send(req: SendRequest): Promise<{ message_id: string; seq: number }> {
  return rpc({ method: 'send', ...req }, 'sent');
}

export async function edit(discussion: string, message_id: string, text: string): Promise<void> {
  await rpc({ method: 'edit', discussion, message_id, text }, 'done');
}

export async function deleteMessage(discussion: string, message_id: string): Promise<void> {
  await rpc({ method: 'delete', discussion, message_id }, 'done');
}

export async function react(discussion: string, message_id: string, emoji: string, add: boolean): Promise<void> {
  await rpc({ method: 'react', discussion, message_id, emoji, add }, 'done');
}

export async function click(discussion: string, message_id: string, action_id: string): Promise<void> {
  await rpc({ method: 'click', discussion, message_id, action_id }, 'done');
}

export async function editHistory(discussion: string, message_id: string): Promise<MessageVersion[]> {
  return (await rpc<{ versions: MessageVersion[] }>({ method: 'edit_history', discussion, message_id }, 'versions')).versions ?? [];
}

export async function markRead(discussion: string, seq: number): Promise<void> {
  await rpc({ method: 'mark_read', discussion, seq }, 'done');
}

export async function directory(query: string, limit = 20): Promise<DirectoryEntry[]> {
  return (await rpc<{ users: DirectoryEntry[] }>({ method: 'directory', query, limit }, 'directory')).users ?? [];
}

export async function openDialog(withUser: string): Promise<DiscussionInfo> {
  return (await rpc<{ discussion: DiscussionInfo }>({ method: 'open_dialog', with: withUser }, 'discussion')).discussion;
}

export async function createGroup(title: string, members: string[]): Promise<DiscussionInfo> {
  return (await rpc<{ discussion: DiscussionInfo }>({ method: 'create_group', title, members }, 'discussion')).discussion;
}

export async function addMembers(discussion: string, users: string[]): Promise<void> {
  await rpc({ method: 'add_members', discussion, users }, 'done');
}

export async function removeMember(discussion: string, user: string): Promise<void> {
  await rpc({ method: 'remove_member', discussion, user }, 'done');
}

export async function setTitle(discussion: string, title: string): Promise<void> {
  await rpc({ method: 'set_title', discussion, title }, 'done');
}

export async function typing(discussion: string, on: boolean): Promise<void> {
  await rpc({ method: 'typing', discussion, typing: on }, 'done');
}

export async function getPreferences(): Promise<Record<string, unknown>> {
  const r = await rpc<{ preferences: unknown }>({ method: 'get_preferences' }, 'preferences');
  return isObject(r.preferences) ? r.preferences : {};
}

export async function setPreferences(preferences: Record<string, unknown>): Promise<void> {
  await rpc({ method: 'set_preferences', preferences }, 'done');
}

// Stage 3: files, search, presence and notifications.

export async function filePolicy(): Promise<FilePolicy> {
  return (await rpc<{ policy: FilePolicy }>({ method: 'file_policy' }, 'file_policy')).policy;
}

/** Declares an upload; the node checks its policy before a byte moves (`forbidden` with `rule`). */
export async function createUpload(discussion: string, name: string, size: number, sha256: string): Promise<UploadInfo> {
  const body = await call('POST', '/api/v1/uploads', { discussion, name, size, sha256 });
  if (!isObject(body) || typeof body.id !== 'string') throw new ApiError(200, 'bad_response', 'Expected an upload');
  return body as unknown as UploadInfo;
}

/**
 * A file's or its preview's address for a plain link or `<img>`: the device goes
 * in the query (the session cookie is taken only with it), never a token, so
 * the browser fetches and saves the file itself instead of the page holding it.
 */
export function fileUrl(id: string, thumbnail = false): string {
  return `/api/v1/files/${encodeURIComponent(id)}${thumbnail ? '/thumbnail' : ''}?device=${encodeURIComponent(deviceId())}`;
}

export interface SearchHit {
  discussion: string;
  message_id: string;
  seq: number;
  author: string;
  created_at: Millis;
  /** HTML-escaped, matches in `<b>`: split into text, never parsed as HTML. */
  snippet: string;
}

export interface SearchResults {
  hits: SearchHit[];
  corrected_query?: string;
  more: boolean;
}

export interface SearchRequest {
  query: string;
  discussion?: string;
  author?: string;
  from?: Millis;
  to?: Millis;
  has_file?: boolean;
  offset?: number;
  limit: number;
}

export async function search(req: SearchRequest): Promise<SearchResults> {
  const r: Record<string, unknown> = { method: 'search', ...req };
  if (!req.has_file) delete r.has_file;
  const res = await rpc<SearchResults>(r, 'search_results');
  return { hits: res.hits ?? [], corrected_query: res.corrected_query, more: !!res.more };
}

export type PresenceChoice = 'auto' | 'away' | 'dnd' | 'invisible';

export async function setPresence(choice: PresenceChoice, status_text: string): Promise<void> {
  await rpc({ method: 'set_presence', choice, status_text }, 'done');
}

export type NotificationLevel = 'default' | 'all' | 'mentions' | 'none';

export interface NotificationSetting {
  discussion: string;
  level: NotificationLevel;
  muted_until?: Millis;
}

export async function notificationSettings(): Promise<NotificationSetting[]> {
  return (await rpc<{ settings: NotificationSetting[] }>({ method: 'notifications' }, 'notification_settings')).settings ?? [];
}

export async function setNotifications(discussion: string, level: NotificationLevel, muted_until?: Millis): Promise<void> {
  const r: Record<string, unknown> = { method: 'set_notifications', discussion, level };
  if (muted_until !== undefined) r.muted_until = muted_until;
  await rpc(r, 'done');
}
