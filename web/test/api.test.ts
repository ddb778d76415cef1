import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as api from '../src/api';
import { ApiError, errorFromBody } from '../src/api';
import { apiError, json, mockFetch, rpcMethod } from './fetch-mock';

const anna = {
  id: 'anna@hq',
  login: 'anna',
  display_name: 'Анна',
  email: 'anna@example.com',
  department: '',
  admin: false,
  locked: false,
  created_at: 1765000000000,
};

async function failure(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    return e as ApiError;
  }
  throw new Error('expected the call to fail');
}

beforeEach(() => localStorage.clear());
afterEach(() => {
  vi.unstubAllGlobals();
  api.setUnauthorizedHandler(null);
});

describe('errorFromBody', () => {
  it('reads the node\'s error object', () => {
    const e = errorFromBody(429, 'Too Many Requests', { error: { code: 'throttled', message: 'slow down', retry_after_ms: 1500 } });
    expect([e.status, e.code, e.message, e.retryAfterMs]).toEqual([429, 'throttled', 'slow down', 1500]);
  });

  it('accepts retry_after_ms beside the error object', () => {
    expect(errorFromBody(429, '', { error: { code: 'throttled', message: '' }, retry_after_ms: 2000 }).retryAfterMs).toBe(2000);
  });

  it('ignores a nonsense retry_after_ms', () => {
    expect(errorFromBody(429, '', { error: { code: 'throttled', message: '', retry_after_ms: 'soon' } }).retryAfterMs).toBeNull();
    expect(errorFromBody(429, '', { error: { code: 'throttled', message: '', retry_after_ms: -1 } }).retryAfterMs).toBeNull();
  });

  it('makes an http_<status> error from a body that is not the node\'s', () => {
    const e = errorFromBody(502, 'Bad Gateway', undefined);
    expect([e.status, e.code, e.message]).toEqual([502, 'http_502', 'Bad Gateway']);
    expect(errorFromBody(500, '', { error: 'text' }).code).toBe('http_500');
    expect(errorFromBody(500, '', null).message).toBe('HTTP 500');
  });
});

describe('calls', () => {
  it('sign in posts the documented body with the device header and same-origin credentials', async () => {
    const calls = mockFetch(() => json(200, { user: anna }));
    const user = await api.login('anna', 'secret');
    expect(user).toEqual(anna);
    const [call] = calls;
    expect(call.url).toBe('/api/v1/login');
    expect(call.method).toBe('POST');
    expect(call.credentials).toBe('same-origin');
    expect(call.headers['content-type']).toBe('application/json');
    const device = localStorage.getItem('veche.device');
    expect(device).toMatch(/^web-[0-9a-f]{16}$/);
    expect(call.headers['veche-device']).toBe(device);
    expect(call.body).toEqual({
      login: 'anna',
      password: 'secret',
      device_id: device,
      device_name: expect.any(String),
      cookie: true,
    });
    expect((call.body as { device_name: string }).device_name.length).toBeLessThanOrEqual(64);
  });

  it('turns error bodies into ApiError', async () => {
    mockFetch(() => apiError(401, 'invalid_credentials', 'wrong'));
    const e = await failure(api.login('anna', 'x'));
    expect([e.status, e.code, e.message]).toEqual([401, 'invalid_credentials', 'wrong']);

    mockFetch(() => apiError(403, 'account_locked', 'locked'));
    expect((await failure(api.login('anna', 'x'))).code).toBe('account_locked');

    mockFetch(() => apiError(429, 'throttled', 'later', { retry_after_ms: 30000 }));
    const throttled = await failure(api.login('anna', 'x'));
    expect([throttled.status, throttled.code, throttled.retryAfterMs]).toEqual([429, 'throttled', 30000]);
  });

  it('reports a body that is not JSON', async () => {
    mockFetch(() => ({ status: 502, text: '<html>bad gateway</html>' }));
    const e = await failure(api.whoami());
    expect([e.status, e.code]).toEqual([502, 'http_502']);

    mockFetch(() => ({ status: 200, text: 'not json' }));
    expect((await failure(api.whoami())).code).toBe('bad_response');
  });

  it('reports an answer of the wrong type', async () => {
    mockFetch(() => json(200, { kind: 'sessions', sessions: [] }));
    expect((await failure(api.whoami())).code).toBe('bad_response');
  });

  it('reports an unreachable node as status 0, code network', async () => {
    mockFetch(() => new TypeError('Failed to fetch'));
    const e = await failure(api.listDiscussions());
    expect([e.status, e.code, e.message]).toEqual([0, 'network', 'Failed to fetch']);
  });

  it('tells the 401 handler about a lost session, but not about a failed sign-in', async () => {
    const seen: ApiError[] = [];
    api.setUnauthorizedHandler((e) => seen.push(e));
    mockFetch(() => apiError(401, 'unauthenticated', 'no session'));
    await failure(api.whoami());
    await failure(api.listDiscussions());
    await failure(api.logout());
    expect(seen.map((e) => e.code)).toEqual(['unauthenticated', 'unauthenticated', 'unauthenticated']);
    mockFetch(() => apiError(401, 'invalid_credentials', 'wrong'));
    await failure(api.login('anna', 'x'));
    expect(seen).toHaveLength(3);
  });

  it('speaks the RPC shapes', async () => {
    const calls = mockFetch((call) => {
      switch (rpcMethod(call)) {
        case 'whoami':
          return json(200, { kind: 'me', user: anna });
        case 'list_sessions':
          return json(200, { kind: 'sessions', sessions: [], current: 's1' });
        case 'revoke_session':
          return json(200, { kind: 'done' });
      }
      if (call.url === '/api/v1/discussions') return json(200, { kind: 'discussions', discussions: [] });
      if (call.url === '/api/v1/logout') return json(200, {});
      return undefined;
    });
    expect(await api.whoami()).toEqual(anna);
    expect(await api.listSessions()).toEqual({ sessions: [], current: 's1' });
    await api.revokeSession('s2');
    expect(await api.listDiscussions()).toEqual([]);
    await api.logout();
    expect(calls.map((c) => [c.method, c.url, c.body])).toEqual([
      ['POST', '/api/v1/rpc', { method: 'whoami' }],
      ['POST', '/api/v1/rpc', { method: 'list_sessions' }],
      ['POST', '/api/v1/rpc', { method: 'revoke_session', session: 's2' }],
      ['GET', '/api/v1/discussions', undefined],
      ['POST', '/api/v1/logout', {}],
    ]);
    expect(calls.every((c) => c.credentials === 'same-origin' && /^web-/.test(c.headers['veche-device']))).toBe(true);
    expect(calls[3].headers['content-type']).toBeUndefined();
  });
});
