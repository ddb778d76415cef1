// A fetch stand-in for unit tests: routes by path (and RPC method) to canned answers.
import { vi } from 'vitest';

export interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  credentials: RequestCredentials | undefined;
  body: unknown;
}

export type Answer = { status?: number; body?: unknown; text?: string } | Error;
export type Route = (call: Call) => Answer | undefined;

export function json(status: number, body: unknown): Answer {
  return { status, body };
}

export function apiError(status: number, code: string, message: string, extra: Record<string, unknown> = {}): Answer {
  return { status, body: { error: { code, message, ...extra } } };
}

/** Installs a fetch mock; unrouted calls answer 404. Returns the list of calls made. */
export function mockFetch(route: Route): Call[] {
  const calls: Call[] = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries((init.headers ?? {}) as Record<string, string>)) headers[k.toLowerCase()] = v;
      const call: Call = {
        url: String(input),
        method: init.method ?? 'GET',
        headers,
        credentials: init.credentials,
        body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined,
      };
      calls.push(call);
      const answer = route(call) ?? { status: 404, body: { error: { code: 'not_found', message: 'no route' } } };
      if (answer instanceof Error) throw answer;
      const text = answer.text ?? (answer.body === undefined ? '' : JSON.stringify(answer.body));
      return new Response(text, {
        status: answer.status ?? 200,
        headers: { 'Content-Type': answer.text === undefined ? 'application/json' : 'text/plain' },
      });
    }),
  );
  return calls;
}

/** The RPC method of a call to /api/v1/rpc, if it is one. */
export function rpcMethod(call: Call): string | undefined {
  return call.url === '/api/v1/rpc' ? (call.body as { method?: string })?.method : undefined;
}
