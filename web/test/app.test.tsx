import { render } from 'preact';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from '../src/app';
import { setLanguage } from '../src/i18n';
import { start } from '../src/state';
import { apiError, json, mockFetch, rpcMethod, type Route } from './fetch-mock';

const anna = {
  id: 'anna@hq',
  login: 'anna',
  display_name: 'Анна Петрова',
  email: '',
  department: '',
  admin: false,
  locked: false,
  created_at: 1765000000000,
};

const discussions = [
  {
    id: 'd1',
    kind: 'dialog',
    title: '',
    object: null,
    members: [
      { user: 'anna@hq', role: 'member' },
      { user: 'boris@hq', role: 'member' },
    ],
    last_seq: 10,
    last_activity_at: 1765000300000,
    read_seq: 7,
    unread: 3,
    mentions: 0,
    following: true,
  },
  {
    id: 'd2',
    kind: 'group',
    title: 'Бухгалтерия <i>все</i>',
    object: null,
    members: [{ user: 'anna@hq', role: 'owner' }],
    last_seq: 4,
    last_activity_at: 1765000100000,
    read_seq: 4,
    unread: 0,
    mentions: 0,
    following: true,
  },
  {
    id: 'd3',
    kind: 'object',
    title: '',
    object: { application: 'erp', object_type: 'invoice', object_id: 'INV-42' },
    members: [{ user: 'anna@hq', role: 'member' }],
    last_seq: 1,
    last_activity_at: 1765000200000,
    read_seq: 0,
    unread: 120,
    mentions: 1,
    following: true,
  },
];

const sessionList = {
  kind: 'sessions',
  current: 's-here',
  sessions: [
    { id: 's-old', device_id: 'web-1111111111111111', device_name: 'Firefox on Windows', created_at: 1765000000000, last_seen_at: new Date(2026, 2, 4, 9, 5).getTime(), expires_at: 1767000000000 },
    { id: 's-here', device_id: 'web-2222222222222222', device_name: 'Chrome on Linux', created_at: 1765000000000, last_seen_at: new Date(2026, 2, 5, 18, 30).getTime(), expires_at: 1767000000000 },
  ],
};

let container: HTMLElement;

beforeEach(() => {
  localStorage.clear();
  container = document.createElement('div');
  document.body.append(container);
});

afterEach(() => {
  render(null, container);
  container.remove();
  vi.unstubAllGlobals();
  setLanguage('en');
});

/** Answers 401 until a login succeeds (unless `signedIn` at start); then the node knows anna. */
function node(loginAnswer: () => ReturnType<Route>, signedIn = false): Route {
  return (call) => {
    if (call.url === '/api/v1/login') {
      const a = loginAnswer();
      if (a && !(a instanceof Error) && (a.status ?? 200) === 200) signedIn = true;
      return a;
    }
    if (!signedIn) return apiError(401, 'unauthenticated', 'sign in first');
    if (rpcMethod(call) === 'whoami') return json(200, { kind: 'me', user: anna });
    if (rpcMethod(call) === 'list_sessions') return json(200, sessionList);
    if (rpcMethod(call) === 'revoke_session') return json(200, { kind: 'done' });
    if (call.url === '/api/v1/discussions') return json(200, { kind: 'discussions', discussions });
    if (call.url === '/api/v1/logout') {
      signedIn = false;
      return json(200, {});
    }
    return undefined;
  };
}

async function boot(route: Route): Promise<ReturnType<typeof mockFetch>> {
  const calls = mockFetch(route);
  render(<App />, container);
  await start();
  return calls;
}

const $ = <T extends Element = HTMLElement>(selector: string) => container.querySelector<T>(selector);

function type(selector: string, value: string) {
  const input = $<HTMLInputElement>(selector)!;
  input.value = value;
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

async function submit(login: string, password: string) {
  await vi.waitFor(() => expect($('form')).not.toBeNull());
  type('#signin-login', login);
  type('#signin-password', password);
  $<HTMLButtonElement>('button[type=submit]')!.click();
}

describe('sign-in', () => {
  it('shows the form when whoami says 401, labelled and in a main landmark', async () => {
    await boot(node(() => json(200, { user: anna })));
    await vi.waitFor(() => expect($('form')).not.toBeNull());
    expect($('main form')).not.toBeNull();
    const login = $<HTMLInputElement>('#signin-login')!;
    const password = $<HTMLInputElement>('#signin-password')!;
    expect($(`label[for=${login.id}]`)?.textContent).toBe('Login');
    expect($(`label[for=${password.id}]`)?.textContent).toBe('Password');
    expect(password.type).toBe('password');
    expect($('#signin-error')?.getAttribute('aria-live')).toBe('assertive');
  });

  it('signs in and shows the shell with the name, the list and the empty pane', async () => {
    const calls = await boot(node(() => json(200, { user: anna })));
    await submit(' anna ', 'correct horse battery');
    await vi.waitFor(() => expect($('header')?.textContent).toContain('Анна Петрова'));
    const login = calls.find((c) => c.url === '/api/v1/login')!;
    expect(login.body).toMatchObject({ login: 'anna', password: 'correct horse battery', cookie: true });
    expect($('form')).toBeNull();
    expect($('nav')).not.toBeNull();
    expect($('main')?.textContent).toContain('Choose a discussion');

    await vi.waitFor(() => expect(container.querySelectorAll('nav li')).toHaveLength(3));
    const items = [...container.querySelectorAll('nav li')].map((li) => ({
      name: li.querySelector('.discussion-name')?.textContent,
      badge: li.querySelector('.unread-badge')?.textContent ?? null,
      mention: li.querySelector('.mention-badge') !== null,
    }));
    // Newest activity first; a dialog is named by the other member's login.
    expect(items).toEqual([
      { name: 'boris', badge: '3', mention: false },
      { name: 'invoice INV-42', badge: '99+', mention: true },
      { name: 'Бухгалтерия <i>все</i>', badge: null, mention: false },
    ]);
    expect(container.querySelector('nav i')).toBeNull();
    const spoken = [...container.querySelectorAll('nav li:first-child .visually-hidden')].map((e) => e.textContent);
    expect(spoken).toEqual(['Offline', ', 3 unread messages']);
    // The tab title counts what the node says is unread.
    expect(document.title).toBe('(123) Veche');

    container.querySelector<HTMLButtonElement>('nav li button')!.click();
    await vi.waitFor(() => expect($('main h1')?.textContent).toBe('boris'));
    expect(container.querySelector('nav li button')?.getAttribute('aria-current')).toBe('true');
  });

  it('shows the Russian text for wrong credentials and stays on the form', async () => {
    setLanguage('ru');
    await boot(node(() => apiError(401, 'invalid_credentials', 'invalid login or password')));
    await submit('anna', 'wrong');
    await vi.waitFor(() => expect($('#signin-error')?.textContent).toBe('Неверный логин или пароль.'));
    expect($('form')).not.toBeNull();
    expect($<HTMLInputElement>('#signin-login')!.value).toBe('anna');
    expect($<HTMLInputElement>('#signin-password')!.value).toBe('');
    expect($<HTMLButtonElement>('button[type=submit]')!.disabled).toBe(false);
  });

  it('shows a node message as literal text, never as HTML', async () => {
    await boot(node(() => apiError(500, 'internal', '<b>x</b>')));
    await submit('anna', 'pw');
    await vi.waitFor(() => expect($('#signin-error')?.textContent).toBe('<b>x</b>'));
    expect($('#signin-error b')).toBeNull();
    expect($('#signin-error')?.innerHTML).toBe('&lt;b&gt;x&lt;/b&gt;');
  });

  it('explains throttling with the wait in plural form', async () => {
    setLanguage('ru');
    await boot(node(() => apiError(429, 'throttled', 'slow down', { retry_after_ms: 4200 })));
    await submit('anna', 'pw');
    await vi.waitFor(() =>
      expect($('#signin-error')?.textContent).toBe('Слишком много попыток. Повторите через 5 секунд.'),
    );
  });

  it('disables the button while signing in', async () => {
    let release: (a: ReturnType<Route>) => void = () => {};
    const pending = new Promise<ReturnType<Route>>((resolve) => (release = resolve));
    const calls = mockFetch(() => apiError(401, 'unauthenticated', ''));
    render(<App />, container);
    await start();
    vi.stubGlobal(
      'fetch',
      vi.fn(async () => {
        const a = await pending;
        return new Response(JSON.stringify((a as { body: unknown }).body), { status: (a as { status: number }).status });
      }),
    );
    await submit('anna', 'pw');
    await vi.waitFor(() => expect($<HTMLButtonElement>('button[type=submit]')!.disabled).toBe(true));
    expect($('button[type=submit]')?.textContent).toBe('Signing in…');
    // A second submit while busy sends nothing more.
    $('form')!.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    release(apiError(401, 'invalid_credentials', ''));
    await vi.waitFor(() => expect($<HTMLButtonElement>('button[type=submit]')!.disabled).toBe(false));
    expect((fetch as unknown as { mock: { calls: unknown[] } }).mock.calls).toHaveLength(1);
    expect(calls).toHaveLength(1);
  });

  it('asks for both fields without calling the node', async () => {
    const calls = await boot(node(() => json(200, { user: anna })));
    await submit('anna', '');
    await vi.waitFor(() => expect($('#signin-error')?.textContent).toBe('Enter your login and password.'));
    expect(calls.filter((c) => c.url === '/api/v1/login')).toHaveLength(0);
  });
});

describe('the shell', () => {
  it('starts signed in when whoami succeeds, and signs out', async () => {
    const calls = await boot(node(() => json(200, { user: anna }), true));
    await vi.waitFor(() => expect($('header')?.textContent).toContain('Анна Петрова'));
    const signOut = [...container.querySelectorAll<HTMLButtonElement>('header button')].find((b) => b.textContent === 'Sign out')!;
    signOut.click();
    await vi.waitFor(() => expect($('form')).not.toBeNull());
    expect(calls.some((c) => c.url === '/api/v1/logout' && c.method === 'POST')).toBe(true);
    expect($('header')).toBeNull();
  });

  it('goes back to the form on a 401 from any call', async () => {
    await boot((call) =>
      rpcMethod(call) === 'whoami' ? json(200, { kind: 'me', user: anna }) : apiError(401, 'unauthenticated', 'expired'),
    );
    // whoami succeeded, the discussion list got 401.
    await vi.waitFor(() => expect($('form')).not.toBeNull());
  });

  it('offers a retry when the node cannot be reached at start', async () => {
    await boot(() => new TypeError('Failed to fetch'));
    await vi.waitFor(() => expect($('[role=alert]')?.textContent).toBe('Cannot reach the server. Check your connection.'));
    expect($('button')?.textContent).toBe('Try again');
  });

  it('lists sessions, marks this one, and ends another', async () => {
    setLanguage('ru');
    const calls = await boot(node(() => json(200, { user: anna }), true));
    await vi.waitFor(() => expect($('header')?.textContent).toContain('Анна Петрова'));
    const open = [...container.querySelectorAll<HTMLButtonElement>('header button')].find((b) => b.textContent === 'Сеансы')!;
    open.click();
    await vi.waitFor(() => expect(container.querySelectorAll('dialog li')).toHaveLength(2));
    const dialog = $<HTMLDialogElement>('dialog')!;
    expect(dialog.open).toBe(true);
    expect(dialog.getAttribute('aria-labelledby')).toBe('sessions-title');
    const [first, second] = [...dialog.querySelectorAll('li')];
    // This device first, marked, without an End button.
    expect(first.querySelector('.session-device')?.textContent).toBe('Chrome on Linux');
    expect(first.textContent).toContain('Это устройство');
    expect(first.textContent).toContain('Последняя активность: 05.03.2026 18:30');
    expect(first.querySelector('button')).toBeNull();
    expect(second.querySelector('.session-device')?.textContent).toBe('Firefox on Windows');
    expect(second.textContent).toContain('04.03.2026 09:05');
    expect(second.textContent).not.toContain('Это устройство');
    const end = second.querySelector('button')!;
    expect(end.textContent).toBe('Завершить');
    expect(end.getAttribute('aria-label')).toBe('Завершить сеанс на устройстве Firefox on Windows');
    end.click();
    await vi.waitFor(() =>
      expect(calls.some((c) => rpcMethod(c) === 'revoke_session' && (c.body as { session: string }).session === 's-old')).toBe(true),
    );
    await vi.waitFor(() => expect(calls.filter((c) => rpcMethod(c) === 'list_sessions')).toHaveLength(2));
    expect(dialog.textContent).toContain('2 активных сеанса');

    const close = [...dialog.querySelectorAll('button')].find((b) => b.textContent === 'Закрыть')!;
    close.click();
    await vi.waitFor(() => expect($('dialog')).toBeNull());
  });
});

describe('a refused session at start', () => {
  it('shows the form with the reason for a locked account', async () => {
    await boot(() => apiError(403, 'account_locked', 'locked'));
    await vi.waitFor(() =>
      expect($('#signin-error')?.textContent).toBe('This account is locked. Contact your administrator.'),
    );
  });
});

describe('keyboard and language', () => {
  const key = (init: KeyboardEventInit) => window.dispatchEvent(new KeyboardEvent('keydown', { bubbles: true, cancelable: true, ...init }));
  const active = () => $('.discussion.active')?.getAttribute('data-discussion');

  it('switches discussions with Alt+arrows, only unread ones with Shift', async () => {
    await boot(node(() => json(200, { user: anna }), true));
    // In order of last activity: d1 (3 unread), d3 (120 unread), d2 (read).
    await vi.waitFor(() => expect(container.querySelectorAll('.discussion')).toHaveLength(3));
    key({ key: 'ArrowDown', code: 'ArrowDown', altKey: true });
    await vi.waitFor(() => expect(active()).toBe('d1'));
    key({ key: 'ArrowDown', code: 'ArrowDown', altKey: true });
    await vi.waitFor(() => expect(active()).toBe('d3'));
    key({ key: 'ArrowDown', code: 'ArrowDown', altKey: true });
    await vi.waitFor(() => expect(active()).toBe('d2'));
    // From d2, the next unread wraps to d1.
    key({ key: 'ArrowDown', code: 'ArrowDown', altKey: true, shiftKey: true });
    await vi.waitFor(() => expect(active()).toBe('d1'));
    key({ key: 'ArrowUp', code: 'ArrowUp', altKey: true, shiftKey: true });
    await vi.waitFor(() => expect(active()).toBe('d3'));
    // The open discussion is the list's one tab stop.
    const stops = [...container.querySelectorAll('.discussions button[tabindex="0"]')].map((b) => b.getAttribute('data-discussion'));
    expect(stops).toEqual(['d3']);
  });

  it('opens the switcher with Ctrl+K on a Russian layout and goes where Enter says', async () => {
    setLanguage('ru');
    await boot(node(() => json(200, { user: anna }), true));
    await vi.waitFor(() => expect(container.querySelectorAll('.discussion')).toHaveLength(3));
    key({ key: 'л', code: 'KeyK', ctrlKey: true });
    await vi.waitFor(() => expect($('dialog.switcher')).not.toBeNull());
    expect($('dialog.switcher h2')?.textContent).toBe('Перейти к обсуждению');
    const input = $<HTMLInputElement>('.switcher-input')!;
    type('.switcher-input', 'бух');
    await vi.waitFor(() => expect(container.querySelectorAll('.switcher-option')).toHaveLength(1));
    expect(input.getAttribute('aria-activedescendant')).toBe('switcher-0');
    input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
    await vi.waitFor(() => expect($('dialog.switcher')).toBeNull());
    expect(active()).toBe('d2');
  });

  it('lists the keys on Ctrl+/ and on ? outside a text field', async () => {
    await boot(node(() => json(200, { user: anna }), true));
    await vi.waitFor(() => expect(container.querySelectorAll('.discussion')).toHaveLength(3));
    key({ key: '/', code: 'Slash', ctrlKey: true });
    await vi.waitFor(() => expect($('dialog.keys-help')).not.toBeNull());
    expect($('dialog.keys-help')?.textContent).toContain('Next unread discussion');
    [...container.querySelectorAll<HTMLButtonElement>('dialog.keys-help button')].find((b) => b.textContent === 'Close')!.click();
    await vi.waitFor(() => expect($('dialog.keys-help')).toBeNull());
    // A ? typed into the filter is text.
    const filter = $<HTMLInputElement>('.filter-input')!;
    filter.focus();
    filter.dispatchEvent(new KeyboardEvent('keydown', { key: '?', shiftKey: true, bubbles: true, cancelable: true }));
    expect($('dialog.keys-help')).toBeNull();
    (document.activeElement as HTMLElement | null)?.blur();
    key({ key: '?', shiftKey: true });
    await vi.waitFor(() => expect($('dialog.keys-help')).not.toBeNull());
  });

  it('switches the sign-in form to Russian and remembers it in this browser', async () => {
    setLanguage('en');
    await boot(() => apiError(401, 'unauthenticated', 'sign in first'));
    await vi.waitFor(() => expect($('h1')?.textContent).toBe('Sign in'));
    const select = $<HTMLSelectElement>('.language-select')!;
    expect(select.value).toBe('auto');
    select.value = 'ru';
    select.dispatchEvent(new Event('change', { bubbles: true }));
    await vi.waitFor(() => expect($('h1')?.textContent).toBe('Вход'));
    expect(localStorage.getItem('veche.lang')).toBe('ru');
    expect(document.documentElement.lang).toBe('ru');
  });
});
