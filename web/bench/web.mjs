// `npm run bench`: the web client and the widget in Debian's Chromium against a
// real `veche serve` (VECHE_BIN, by default target/release/veche), with the
// data the issue names: 1,000 discussions holding 100,000 messages. Each
// figure is the median of 3 runs, every run in a fresh browser context (no
// cache, no storage). Not a test: it asserts nothing and is not part of CI.
//
//   VECHE_BIN=…/veche npm run bench
//   VECHE_BENCH_DISCUSSIONS / VECHE_BENCH_MESSAGES / VECHE_BENCH_RUNS change the size.
//
// What is measured (times from the page's navigation start, `performance.now()`
// taken by a MutationObserver in the page at the moment the element appears):
// - client: first contentful paint; the discussion list painted (its first row);
//   all rows painted; interactive (the list painted and the main thread then
//   quiet for 1 s: the end of the last long task before that, as Lighthouse's TTI);
// - opening a discussion: click → its newest messages painted;
// - long-list scrolling: scrolling a 5,000-message discussion back by 1,000
//   messages (20 pages of history) to the top: time and frames longer than 50 ms;
// - widget (top-level, as 1C's HTML field loads it): first contentful paint;
//   history painted (token exchanged, session opened, 50 messages shown);
// - bundle sizes: what index.html and embed.html load (scripts, module
//   preloads, styles), gzip as the node serves them; lazily loaded emoji data
//   and sw.js are not part of either.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { launchBrowser } from '../e2e/browser.mjs';
import { REPO, run, startNode } from '../e2e/node.mjs';
import { smtpSink } from '../e2e/smtp.mjs';

const PASSWORD = 'correct horse battery';
const INSTANCE = 'erp-bench';
const DIST = join(REPO, 'web', 'dist');
const DISCUSSIONS = Number(process.env.VECHE_BENCH_DISCUSSIONS ?? 1000);
const MESSAGES = Number(process.env.VECHE_BENCH_MESSAGES ?? 100_000);
const RUNS = Number(process.env.VECHE_BENCH_RUNS ?? 3);
/** Messages of the long discussion (scrolled through); the rest are spread evenly. */
const LONG = Math.min(5000, Math.floor(MESSAGES / 4));
const SCROLL_BACK = Math.min(1000, LONG - 100);
const PARALLEL = 16;
const BIN = process.env.VECHE_BIN || join(REPO, 'target', 'release', 'veche');

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * @template T
 * @param {string} what @param {() => Promise<T>} f
 * @returns {Promise<T>}
 */
async function timed(what, f) {
  const t0 = Date.now();
  const r = await f();
  console.error(`  ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return r;
}

/**
 * Runs `f(i)` for i in 0..n with `parallel` at a time.
 * @param {number} n @param {number} parallel @param {(i: number) => Promise<void>} f
 */
async function pool(n, parallel, f) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await f(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
}

/** A user's bearer session over the HTTP API. @param {string} url @param {string} login */
async function session(url, login) {
  const device = `bench-${login}`;
  const r = await fetch(`${url}/api/v1/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ login, password: PASSWORD, device_id: device }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`login ${login}: ${r.status} ${JSON.stringify(body)}`);
  /** @param {Record<string, unknown>} request */
  return async (request) => {
    for (let attempt = 0; ; attempt += 1) {
      const res = await fetch(`${url}/api/v1/rpc`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${body.session_token}`, 'Veche-Device': device },
        body: JSON.stringify(request),
      });
      const value = await res.json();
      if (res.ok && !value.error) return value;
      const retry = value.error?.retry_after_ms;
      if (res.status === 429 || value.error?.code === 'throttled' || value.error?.code === 'unavailable') {
        if (attempt < 100) {
          await new Promise((resolve) => setTimeout(resolve, typeof retry === 'number' ? retry : 100));
          continue;
        }
      }
      throw new Error(`${request.method}: ${res.status} ${JSON.stringify(value)}`);
    }
  };
}

/** A line of text for message `i`, a little different each time. @param {number} i */
function text(i) {
  const words = ['счёт', 'договор', 'поставка', 'оплата', 'склад', 'отгрузка', 'invoice', 'delivery', 'payment', 'report'];
  return `Сообщение ${i}: ${words[i % words.length]} ${words[(i * 7) % words.length]} № ${1000 + i}`;
}

/**
 * Fills the node: boris writes into `DISCUSSIONS - 1` groups with anna and into
 * one object discussion (the invoice the widget shows); the first group is the
 * long one. Returns the ids.
 * @param {string} url @param {(method: string, path: string, body?: unknown) => Promise<any>} app
 */
async function seed(url, app) {
  const boris = await session(url, 'boris');
  const groups = DISCUSSIONS - 1;
  const rest = MESSAGES - LONG;
  // The other groups and the invoice share the rest.
  const per = Math.floor(rest / (DISCUSSIONS - 1));
  /** @type {string[]} */
  const ids = [];
  await timed(`${groups} groups`, () =>
    pool(groups, PARALLEL, async (i) => {
      const r = await boris({ method: 'create_group', title: i === 0 ? 'Длинная история' : `Группа ${i}`, members: ['anna'] });
      ids[i] = r.discussion.id;
    }),
  );
  /** @type {Array<[string, number]>} */
  const plan = ids.map((id, i) => [id, i === 0 ? LONG : per]);
  let extra = rest - per * (DISCUSSIONS - 1);
  for (let i = 1; extra > 0; i += 1, extra -= 1) plan[i][1] += 1;
  let sent = 0;
  await timed(`${MESSAGES - per} messages into the groups`, () =>
    pool(plan.length, PARALLEL, async (k) => {
      const [discussion, count] = plan[k];
      for (let i = 0; i < count; i += 1) {
        await boris({ method: 'send', discussion, client_msg_id: `b-${k}-${i}`, text: text(i) });
        sent += 1;
        if (sent % 10_000 === 0) console.error(`    ${sent}`);
      }
    }),
  );
  await app('PUT', '/api/v1/objects/invoice/INV-1/discussion', { title: 'Счёт INV-1' });
  await app('PUT', '/api/v1/objects/invoice/INV-1/access', { users: ['anna'] });
  await timed(`${per} messages into the invoice`, async () => {
    for (let i = 0; i < per; i += 1) {
      await app('POST', '/api/v1/objects/invoice/INV-1/messages', { client_msg_id: `inv-${i}`, text: text(i) });
    }
  });
  const anna = await session(url, 'anna');
  const rows = (await anna({ method: 'list_discussions' })).discussions.length;
  return { long: ids[0], short: ids[ids.length - 1], per, rows };
}

/** Registers the "ERP" with the code the node mails, and allows it to embed. */
async function registerApp(/** @type {import('../e2e/node.mjs').RunningNode} */ node, /** @type {Awaited<ReturnType<typeof smtpSink>>} */ smtp) {
  const register = await fetch(`${node.url}/api/v1/apps/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'erp', email: 'ops@example.test' }),
  });
  if (register.status !== 202) throw new Error(`register: ${register.status} ${await register.text()}`);
  const code = /\b(\d{8})\b/.exec(await smtp.next())?.[1];
  const activate = await fetch(`${node.url}/api/v1/apps/activate`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'erp', code, instance_id: INSTANCE }),
  });
  const { secret } = await activate.json();
  if (!secret) throw new Error('the application was not activated');
  await run(BIN, ['admin', '--data', node.data, 'app', 'allow-embed', 'erp', '--origin', 'http://localhost:1'], '');
  /** @param {string} method @param {string} path @param {unknown} [body] */
  return async (method, path, body) => {
    const response = await fetch(`${node.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${secret}`, 'Veche-Instance': INSTANCE, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const t = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${t}`);
    return t ? JSON.parse(t) : null;
  };
}

/**
 * Installed before the page's own scripts: records when elements first appear,
 * the first contentful paint, long tasks, clicks and frames.
 * @param {Record<string, string>} marks name → CSS selector
 */
function observer(marks) {
  const w = /** @type {any} */ (window);
  w.__bench = { marks: {}, longtasks: [], fcp: null, click: null };
  const b = w.__bench;
  const check = () => {
    for (const [name, selector] of Object.entries(marks)) {
      if (b.marks[name] === undefined && document.querySelector(selector)) b.marks[name] = performance.now();
    }
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, attributes: true });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name === 'first-contentful-paint') b.fcp = e.startTime;
    }
  }).observe({ type: 'paint', buffered: true });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) b.longtasks.push([e.startTime, e.startTime + e.duration]);
  }).observe({ type: 'longtask', buffered: true });
  addEventListener('click', () => (b.click = performance.now()), true);
}

/** @param {import('playwright-core').Page} page */
const bench = (page) => page.evaluate(() => /** @type {any} */ (window).__bench);

/** @param {import('playwright-core').Page} page @param {string} name */
async function waitMark(page, name) {
  await page.waitForFunction((n) => /** @type {any} */ (window).__bench?.marks[n] !== undefined, name, { timeout: 120_000 });
  return (await bench(page)).marks[name];
}

/** Lighthouse's TTI in short: the end of the last long task before a quiet second after `from`. */
async function interactive(/** @type {import('playwright-core').Page} */ page, /** @type {number} */ from) {
  for (;;) {
    await page.waitForTimeout(1000);
    /** @type {{ longtasks: Array<[number, number]> }} */
    const b = await bench(page);
    const now = await page.evaluate(() => performance.now());
    const last = b.longtasks.reduce((m, [, end]) => Math.max(m, end), from);
    if (now - last >= 1000) return Math.max(from, last);
  }
}

/** The assets a page loads from its HTML, with their gzip sizes. @param {string} html */
function pageAssets(html) {
  const source = readFileSync(join(DIST, html), 'utf8');
  const refs = [...source.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  return refs.map((ref) => ({ ref, gz: statSync(join(DIST, `${ref}.gz`)).size, raw: statSync(join(DIST, ref)).size }));
}

/** @param {number} bytes */
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
/** @param {number} ms */
const msText = (ms) => `${Math.round(ms)} ms`;

function machine() {
  const cpu = cpus();
  const chromium = (() => {
    try {
      return execFileSync(process.env.CHROMIUM || '/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return 'unknown';
    }
  })();
  const version = (() => {
    try {
      return execFileSync(BIN, ['--version'], { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  })();
  return [
    `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB (${(freemem() / 2 ** 30).toFixed(1)} free)`,
    `load average at the start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `${chromium}; Node.js ${process.version}; ${version} (${BIN})`,
  ];
}

async function main() {
  if (!existsSync(BIN)) throw new Error(`No veche binary at ${BIN}: build it (cargo build --release -p veche-node) or set VECHE_BIN.`);
  const state = machine();
  console.error(state.join('\n'));
  const smtp = await smtpSink();
  const node = await startNode({
    bin: BIN,
    users: ['anna', 'boris'].map((login) => ({ login, password: PASSWORD })),
    config: `[smtp]
host = "127.0.0.1"
port = ${smtp.port}
security = "none"
from = "veche@test.local"
[apps]
self_registration_domains = ["example.test"]
`,
  });
  const browser = await launchBrowser();
  /** @type {Record<string, number[]>} */
  const results = {};
  const record = (/** @type {string} */ name, /** @type {number} */ value) => (results[name] ??= []).push(value);
  try {
    const app = await registerApp(node, smtp);
    console.error(`seeding ${DISCUSSIONS} discussions, ${MESSAGES} messages:`);
    const { long, short, per, rows } = await timed('seeding', () => seed(node.url, app));
    const top = LONG - SCROLL_BACK; // the message scrolled back to

    for (let r = 0; r < RUNS; r += 1) {
      console.error(`run ${r + 1}/${RUNS}`);
      const context = await browser.newContext({ locale: 'ru-RU', viewport: { width: 1280, height: 800 } });
      context.setDefaultTimeout(120_000);
      await context.addInitScript(observer, {
        list: '.discussion',
        all: `.discussions > :nth-child(${rows})`,
        messages: '.message-list .message',
      });
      const page = await context.newPage();
      // Signed in once (not measured); then every navigation has the cookie.
      await page.goto(node.url);
      await page.locator('#signin-login').fill('anna');
      await page.locator('#signin-password').fill(PASSWORD);
      await page.locator('#signin-password').press('Enter');
      await page.locator('.discussion').first().waitFor();

      // The client's start, signed in.
      await page.goto(node.url);
      const listAt = await waitMark(page, 'list');
      const allAt = await waitMark(page, 'all');
      const tti = await interactive(page, allAt);
      const b = await bench(page);
      record('client: first contentful paint', b.fcp);
      record(`client: discussion list painted (first row)`, listAt);
      record(`client: all ${rows} rows painted`, allAt);
      record('client: interactive (quiet 1 s after the list)', tti);
      // Where the list's time goes: the node's answer, then the page's work.
      const list = await page.evaluate(() => {
        const e = /** @type {PerformanceResourceTiming | undefined} */ (
          performance.getEntriesByType('resource').find((r) => new URL(r.name).pathname === '/api/v1/discussions')
        );
        return e ? { requestStart: e.requestStart, responseStart: e.responseStart, responseEnd: e.responseEnd, size: e.decodedBodySize } : null;
      });
      if (list) {
        record('  of which the node answers GET /api/v1/discussions (request → last byte)', list.responseEnd - list.requestStart);
        record('  of which the page renders the list (last byte → first row)', listAt - list.responseEnd);
        record('  GET /api/v1/discussions body, KB', list.size / 1024);
      }

      // Opening a discussion with history.
      await page.locator(`.discussion[data-discussion="${short}"]`).click();
      const shown = await waitMark(page, 'messages');
      const clickAt = (await bench(page)).click;
      await page.locator('.message', { hasText: text(per - 1) }).waitFor();
      record(`open a discussion (${per} messages): click → history painted`, shown - clickAt);

      // Scrolling back through a long history, 50 messages per page from the node.
      await page.locator(`.discussion[data-discussion="${long}"]`).click();
      await page.locator('.message', { hasText: text(LONG - 1) }).waitFor();
      const scroll = await page.evaluate(
        async ({ target }) => {
          const scroller = /** @type {HTMLElement} */ (document.querySelector('.messages'));
          const found = () =>
            Array.from(document.querySelectorAll('.message .message-text')).some((e) => e.textContent?.startsWith(target));
          let frames = 0;
          let slow = 0;
          let worst = 0;
          let last = performance.now();
          const start = last;
          await new Promise((resolve, reject) => {
            const step = () => {
              const now = performance.now();
              const frame = now - last;
              last = now;
              frames += 1;
              if (frame > 50) slow += 1;
              worst = Math.max(worst, frame);
              if (found()) return resolve(undefined);
              if (now - start > 120_000) return reject(new Error('did not reach the message'));
              scroller.scrollTop = Math.max(0, scroller.scrollTop - 1200);
              requestAnimationFrame(step);
            };
            requestAnimationFrame(step);
          });
          return { ms: performance.now() - start, frames, slow, worst };
        },
        { target: `Сообщение ${top}:` },
      );
      record(`scroll back ${SCROLL_BACK} messages: time`, scroll.ms);
      record(`scroll back ${SCROLL_BACK} messages: frames over 50 ms`, scroll.slow);
      record(`scroll back ${SCROLL_BACK} messages: longest frame`, scroll.worst);
      await context.close();

      // The widget, top-level like 1C's HTML field (a token per load: it is single-use).
      const minted = await app('POST', '/api/v1/embed/tokens', { object_type: 'invoice', object_id: 'INV-1', user: 'anna' });
      const wctx = await browser.newContext({ locale: 'ru-RU', viewport: { width: 480, height: 700 } });
      wctx.setDefaultTimeout(120_000);
      await wctx.addInitScript(observer, { widget: '.widget[data-phase="open"] .widget-message' });
      const wpage = await wctx.newPage();
      await wpage.goto(`${node.url}${minted.page}`);
      const widgetAt = await waitMark(wpage, 'widget');
      const wb = await bench(wpage);
      record('widget: first contentful paint', wb.fcp);
      record('widget: history painted (token exchanged, 50 messages)', widgetAt);
      await wctx.close();
    }
  } finally {
    await browser.close();
    await node.stop();
    await smtp.close();
  }

  const shell = pageAssets('index.html');
  const widget = pageAssets('embed.html');
  const sum = (/** @type {Array<{ gz: number }>} */ xs) => xs.reduce((s, x) => s + x.gz, 0);
  const lines = [
    `Machine: ${state.join('; ')}.`,
    `Data: ${DISCUSSIONS} discussions, ${MESSAGES} messages (one of ${LONG}); median of ${RUNS} runs, each in a fresh browser context.`,
    '',
    '| what | median | runs |',
    '|---|---|---|',
  ];
  for (const [name, values] of Object.entries(results)) {
    const fmt = name.includes('frames over') ? String : name.endsWith('KB') ? (/** @type {number} */ v) => v.toFixed(0) : msText;
    lines.push(`| ${name} | ${fmt(median(values))} | ${values.map((v) => fmt(v)).join(', ')} |`);
  }
  lines.push(`| shell JS+CSS, gzip (${shell.map((a) => a.ref.replace('assets/', '')).join(', ')}) | ${kb(sum(shell))} | budget 120 KB |`);
  lines.push(`| widget JS+CSS, gzip (${widget.map((a) => a.ref.replace('assets/', '')).join(', ')}) | ${kb(sum(widget))} | budget 60 KB |`);
  console.log(lines.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
