// Where the widget may talk: pure checks on origins, so that events go only to
// a host page an administrator allowed (never to `*`), and only such a page's
// messages are taken. No DOM access here; the caller passes what it read.

/** `scheme://host[:port]` of a URL, lowercase, default port left out; null if it has none. */
export function originOf(url: string | null | undefined): string | null {
  if (!url) return null;
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    return u.origin;
  } catch {
    return null;
  }
}

/** Whether `origin` is exactly one of `allowed` (as the node lists them). */
export function isAllowed(origin: string | null | undefined, allowed: readonly string[]): boolean {
  if (!origin || origin === 'null') return false;
  const normalized = originOf(origin);
  return normalized !== null && normalized === origin && allowed.includes(origin);
}

/**
 * The origin to post events to: the framing page's (`location.ancestorOrigins[0]`
 * where the browser tells it, else the referrer's), if it is allowed; null when
 * the page is not framed, or framed by a page that is not allowed.
 */
export function hostTarget(
  framed: boolean,
  ancestorOrigin: string | null | undefined,
  referrer: string | null | undefined,
  allowed: readonly string[],
): string | null {
  if (!framed) return null;
  const candidate = ancestorOrigin ?? originOf(referrer);
  return isAllowed(candidate, allowed) ? (candidate as string) : null;
}

/** Whether a `message` event comes from the framing page itself, at an allowed origin. */
export function acceptsMessage(
  eventOrigin: string,
  fromParent: boolean,
  allowed: readonly string[],
): boolean {
  return fromParent && isAllowed(eventOrigin, allowed);
}

/** The object a widget page shows: `/embed/object/{app}/{type}/{id}`. */
export interface EmbedObject {
  app: string;
  type: string;
  id: string;
}

export function parseEmbedPath(pathname: string): EmbedObject | null {
  const m = /^\/embed\/object\/([^/]+)\/([^/]+)\/([^/]+)\/?$/.exec(pathname);
  if (!m) return null;
  try {
    return { app: decodeURIComponent(m[1]), type: decodeURIComponent(m[2]), id: decodeURIComponent(m[3]) };
  } catch {
    return null;
  }
}

/** The embed token in the page's fragment (`#t=vemb_…`), which never reaches a server. */
export function tokenFromFragment(hash: string): string | null {
  const params = new URLSearchParams(hash.startsWith('#') ? hash.slice(1) : hash);
  const token = params.get('t');
  return token && /^vemb_[0-9a-f]{64}$/.test(token) ? token : null;
}

/** The events the widget posts to its host (postMessage protocol v1). */
export type HostEvent =
  | { source: 'veche'; v: 1; type: 'ready'; discussion: string }
  | { source: 'veche'; v: 1; type: 'unread'; count: number }
  | { source: 'veche'; v: 1; type: 'resize'; height: number }
  | { source: 'veche'; v: 1; type: 'ended'; reason: string };

/** A message from the host: `{source: 'veche-host', v: 1, type: 'token' | 'focus', token?}`. */
export type HostCommand = { type: 'token'; token: string } | { type: 'focus' };

export function parseHostCommand(data: unknown): HostCommand | null {
  if (typeof data !== 'object' || data === null) return null;
  const d = data as Record<string, unknown>;
  if (d.source !== 'veche-host' || d.v !== 1) return null;
  if (d.type === 'focus') return { type: 'focus' };
  if (d.type === 'token' && typeof d.token === 'string' && /^vemb_[0-9a-f]{64}$/.test(d.token)) {
    return { type: 'token', token: d.token };
  }
  return null;
}
