// The object-discussion widget in an ERP's page, in Chromium: the host page is
// examples/erp/web/invoice.html served from another loopback origin
// (http://localhost:P framing the node at http://127.0.0.1:N), with a token the
// "ERP" (this test) mints server-side. The allowed origin gets the widget's
// events; a foreign origin is refused by frame-ancestors and gets nothing; a
// used or expired token fails with a clear message; files are attached (the
// policy checked first), previewed and downloaded within the invoice's
// discussion; revoking the user's access to the invoice ends the widget's session.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { launchBrowser, screenshots, watchErrors } from './browser.mjs';
import { REPO, run, startNode, vecheBin } from './node.mjs';
import { smtpSink } from './smtp.mjs';

const PASSWORD = 'correct horse battery';
const INSTANCE = 'erp-e2e';
/** @type {Record<string, any>} */
const ru = JSON.parse(readFileSync(new URL('../src/i18n/ru.json', import.meta.url), 'utf8'));
const TEMPLATE = readFileSync(join(REPO, 'examples', 'erp', 'web', 'invoice.html'), 'utf8');

/** @type {Awaited<ReturnType<typeof smtpSink>>} */
let smtp;
/** @type {import('./node.mjs').RunningNode} */
let node;
/** @type {import('playwright-core').Browser} */
let browser;
let secret = '';

/**
 * An ERP's web server on loopback: each GET answers what `page` renders then.
 * @returns {Promise<{ origin: string, page: () => Promise<string>, setPage: (f: () => Promise<string>) => void, close: () => Promise<void> }>}
 */
async function erpServer() {
  /** @type {() => Promise<string>} */
  let render = async () => 'nothing here';
  const server = createServer((_req, res) => {
    render().then(
      (html) => {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(html);
      },
      (e) => {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(e));
      },
    );
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    // Another site than the node's 127.0.0.1.
    origin: `http://localhost:${port}`,
    page: () => render(),
    setPage: (f) => (render = f),
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}

/** @type {Awaited<ReturnType<typeof erpServer>>} */
let erp;
/** @type {Awaited<ReturnType<typeof erpServer>>} */
let foreign;

/**
 * A call of the application (with its secret: only ever from the ERP's server).
 * @param {string} method @param {string} path @param {unknown} [body]
 */
async function app(method, path, body) {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${secret}`, 'Veche-Instance': INSTANCE, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return value;
}

/** @param {number} [ttl] */
function mint(ttl) {
  const body = { object_type: 'invoice', object_id: 'INV-1', user: 'alice' };
  if (ttl) Object.assign(body, { ttl_secs: ttl });
  return app('POST', '/api/v1/embed/tokens', body);
}

/** The example page with the widget at `page` (path and fragment on the node). */
function invoicePage(/** @type {string} */ page) {
  return TEMPLATE.split('{{VECHE}}').join(node.url).split('{{WIDGET}}').join(page);
}

before(async () => {
  smtp = await smtpSink();
  node = await startNode({
    users: [{ login: 'alice', password: PASSWORD }],
    config: `[smtp]
host = "127.0.0.1"
port = ${smtp.port}
security = "none"
from = "veche@test.local"
[apps]
self_registration_domains = ["example.test"]
`,
  });
  // The ERP registers itself with the code the node e-mails.
  const register = await fetch(`${node.url}/api/v1/apps/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'erp', email: 'ops@example.test' }),
  });
  assert.equal(register.status, 202, await register.text());
  const code = /\b(\d{8})\b/.exec(await smtp.next())?.[1];
  assert.ok(code, 'a code in the mail');
  const activate = await fetch(`${node.url}/api/v1/apps/activate`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'erp', code, instance_id: INSTANCE }),
  });
  secret = (await activate.json()).secret;
  assert.ok(secret, 'activated');
  erp = await erpServer();
  foreign = await erpServer();
  // The administrator allows the ERP to embed the widget in its own pages only.
  await run(vecheBin(), ['admin', '--data', node.data, 'app', 'allow-embed', 'erp', '--origin', erp.origin], '');
  await app('PUT', '/api/v1/objects/invoice/INV-1/discussion', { title: 'Счёт INV-1' });
  await app('PUT', '/api/v1/objects/invoice/INV-1/access', { users: ['alice'] });
  await app('POST', '/api/v1/objects/invoice/INV-1/messages', { client_msg_id: 'posted', text: 'Счёт проведён' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await erp?.close();
  await foreign?.close();
  await node?.stop();
  await smtp?.close();
});

async function freshPage() {
  const context = await browser.newContext({ locale: 'ru-RU', viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  return { context, page, errors: watchErrors(page) };
}

/**
 * The host page's log of the widget's events.
 * @param {import('playwright-core').Page} page
 */
async function hostEvents(page) {
  return page.locator('#events li').evaluateAll((items) => items.map((li) => JSON.parse(li.textContent ?? '{}')));
}

/** @param {import('playwright-core').Page} page @param {(e: any) => boolean} match */
async function waitHostEvent(page, match) {
  const source = match.toString();
  await page.waitForFunction(
    (src) => {
      // eslint-disable-next-line no-new-func
      const f = new Function(`return (${src})`)();
      return Array.from(document.querySelectorAll('#events li')).some((li) => f(JSON.parse(li.textContent ?? '{}')));
    },
    source,
  );
}

test('the object-discussion widget in an ERP page', async (t) => {
  const host = await freshPage();
  const widget = host.page.frameLocator('#veche');

  await t.test('an allowed origin frames it and gets ready, unread and resize', async () => {
    erp.setPage(async () => invoicePage((await mint()).page));
    await host.page.goto(`${erp.origin}/invoice/INV-1`);
    await widget.locator('.widget[data-phase="open"]').waitFor();
    await widget.locator('.widget-message', { hasText: 'Счёт проведён' }).waitFor();
    await waitHostEvent(host.page, (e) => e.type === 'ready');
    await waitHostEvent(host.page, (e) => e.type === 'resize' && e.height > 0);
    // Unread from the node: the application's message, then none once it is on screen.
    await waitHostEvent(host.page, (e) => e.type === 'unread' && e.count === 1);
    await waitHostEvent(host.page, (e) => e.type === 'unread' && e.count === 0);
    for (const e of await hostEvents(host.page)) assert.equal(e.source, 'veche');
    // The token left the widget's address at once; nothing is kept in a cookie or storage.
    const frame = host.page.frames().find((f) => f.url().includes('/embed/object/'));
    assert.ok(frame, 'the widget frame');
    assert.doesNotMatch(frame.url(), /#t=|vemb/);
    const kept = await frame.evaluate(() => {
      let stored = 0;
      try {
        stored = localStorage.length + sessionStorage.length;
      } catch {
        // A third-party frame may be denied storage altogether: nothing kept there either.
      }
      return { cookie: document.cookie, stored };
    });
    assert.deepEqual(kept, { cookie: '', stored: 0 });
    // 1C's HTML field reads the same state without a parent to post to.
    const state = await frame.evaluate(() => window.vecheEmbed?.state());
    assert.equal(state?.ready, true);
    assert.equal(state?.ended, null);
    assert.deepEqual(host.errors.filter((e) => /Content Security Policy|pageerror/.test(e)), []);
  });

  await t.test('the widget writes, and messages of others arrive live', async () => {
    await widget.locator('.widget-input').fill('Проверила, сумма верна');
    await widget.locator('.widget-input').press('Enter');
    await widget.locator('.widget-message.mine', { hasText: 'Проверила, сумма верна' }).waitFor();
    await app('POST', '/api/v1/objects/invoice/INV-1/messages', { client_msg_id: 'paid', text: 'Оплачено' });
    await widget.locator('.widget-message', { hasText: 'Оплачено' }).waitFor();
    await screenshots(host.page, 'widget-invoice');
  });

  await t.test('the widget attaches, previews and downloads files in its discussion', async () => {
    // The node's policy first, naming the rule, before a byte moves.
    await widget.locator('.widget-file-input').setInputFiles({ name: 'run.bat', mimeType: 'application/octet-stream', buffer: Buffer.from('echo') });
    await widget.locator('.widget-file-notice', { hasText: 'files.blocked_extensions' }).waitFor();
    assert.equal(await widget.locator('.widget-attachment').count(), 0);

    const data = randomBytes(300_000);
    await widget.locator('.widget-file-input').setInputFiles({ name: 'акт сверки.bin', mimeType: 'application/octet-stream', buffer: data });
    await widget.locator('.widget-attachment[data-state="done"]', { hasText: 'акт сверки.bin' }).waitFor();
    // An image dropped on the composer gets a preview.
    const frame = host.page.frames().find((f) => f.url().includes('/embed/object/'));
    assert.ok(frame, 'the widget frame');
    await frame.evaluate(async () => {
      const canvas = document.createElement('canvas');
      canvas.width = 48;
      canvas.height = 32;
      const ctx = canvas.getContext('2d');
      if (!ctx) throw new Error('no 2d context');
      ctx.fillStyle = '#8a2f5d';
      ctx.fillRect(0, 0, 48, 32);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
      const dt = new DataTransfer();
      dt.items.add(new File([/** @type {Blob} */ (blob)], 'печать.png', { type: 'image/png' }));
      const target = document.querySelector('.widget-composer');
      target?.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      target?.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await widget.locator('.widget-attachment[data-state="done"]', { hasText: 'печать.png' }).waitFor();
    await widget.locator('.widget-input').fill('Акт и печать во вложении');
    await widget.locator('.widget-input').press('Enter');
    const sent = widget.locator('.widget-message.mine', { hasText: 'Акт и печать во вложении' });
    await sent.locator('.widget-file', { hasText: 'акт сверки.bin' }).waitFor();
    assert.equal(await widget.locator('.widget-attachment').count(), 0);
    await frame.waitForFunction(() => {
      const i = document.querySelector('img.widget-thumb');
      return i instanceof HTMLImageElement && i.complete && i.naturalWidth > 0;
    });

    // The file comes back whole, fetched with the embed session.
    const [download] = await Promise.all([
      host.page.waitForEvent('download'),
      sent.locator('.widget-file', { hasText: 'акт сверки.bin' }).locator('.widget-download').click(),
    ]);
    assert.equal(download.suggestedFilename(), 'акт сверки.bin');
    const sha = (/** @type {Buffer} */ b) => createHash('sha256').update(b).digest('hex');
    assert.equal(sha(readFileSync(await download.path())), sha(data));
    await screenshots(host.page, 'widget-files');
  });

  await t.test('a page of another origin is refused by frame-ancestors and gets no events', async () => {
    const other = await freshPage();
    const minted = await mint();
    foreign.setPage(async () => invoicePage(minted.page));
    const refused = other.page.waitForEvent('console', { predicate: (m) => /frame-ancestors/.test(m.text()) });
    await other.page.goto(`${foreign.origin}/invoice/INV-1`);
    await refused;
    assert.deepEqual(await hostEvents(other.page), []);
    // The widget never ran there: its token is still unused.
    const exchange = await fetch(`${node.url}/api/v1/embed/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: minted.token, app: 'erp', object_type: 'invoice', object_id: 'INV-1' }),
    });
    assert.equal(exchange.status, 200);
    await other.context.close();
  });

  await t.test('a used token and an expired token fail with a clear message', async () => {
    const minted = await mint();
    erp.setPage(async () => invoicePage(minted.page));
    const first = await freshPage();
    await first.page.goto(`${erp.origin}/invoice/INV-1`);
    await first.page.frameLocator('#veche').locator('.widget[data-phase="open"]').waitFor();
    const second = await freshPage();
    await second.page.goto(`${erp.origin}/invoice/INV-1`);
    await second.page.frameLocator('#veche').locator('.widget-error', { hasText: ru['embed.used_token'] }).waitFor();

    const short = await mint(1);
    erp.setPage(async () => invoicePage(short.page));
    // The node's clock is the real one here: wait until the token's expiry has passed.
    await new Promise((resolve) => {
      const check = () => (Date.now() > short.expires_at + 100 ? resolve(undefined) : setTimeout(check, 50));
      check();
    });
    const late = await freshPage();
    await late.page.goto(`${erp.origin}/invoice/INV-1`);
    await late.page.frameLocator('#veche').locator('.widget-error', { hasText: ru['embed.expired_token'] }).waitFor();
    for (const p of [first, second, late]) await p.context.close();
  });

  await t.test("revoking the user's access to the invoice closes the widget's session", async () => {
    await app('PUT', '/api/v1/objects/invoice/INV-1/access', { users: [] });
    await widget.locator('.widget-ended').waitFor();
    await waitHostEvent(host.page, (e) => e.type === 'ended');
    const frame = host.page.frames().find((f) => f.url().includes('/embed/object/'));
    const state = await frame?.evaluate(() => window.vecheEmbed?.state());
    assert.ok(state?.ended, 'the 1C state says it ended');
    await host.context.close();
  });
});
