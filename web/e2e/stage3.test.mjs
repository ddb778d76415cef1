// Stage 3 with two people in two browser contexts: a file upload cut off
// mid-way and resumed from what the node confirmed, then previewed and
// downloaded by the other side (from a plain link that names the device);
// search in Russian with chips; a status seen by the other side; a
// discussion's notification level respected; a push the node encrypted for a
// subscription, taken at a loopback push service and handed to the service worker.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { launchBrowser, message, screenshots, signedIn } from './browser.mjs';
import { startNode } from './node.mjs';
import { decryptPush, pushService, subscriptionKeys } from './push.mjs';

const PASSWORD = 'correct horse battery';
/** @type {Record<string, any>} */
const ru = JSON.parse(readFileSync(new URL('../src/i18n/ru.json', import.meta.url), 'utf8'));
const CHUNK = 4 << 20;

/** @type {import('./node.mjs').RunningNode} */
let node;
/** @type {import('playwright-core').Browser} */
let browser;
/** @type {Awaited<ReturnType<typeof pushService>>} */
let push;
before(async () => {
  push = await pushService();
  node = await startNode({
    users: ['vera', 'gleb'].map((login) => ({ login, password: PASSWORD })),
    // The loopback push service above stands in for a browser vendor's (tests only).
    config: `[push]
allow_loopback_endpoints = true
`,
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
  await push?.close();
});

/** @param {string} login */
async function person(login) {
  return signedIn(browser, node.url, login, PASSWORD);
}

/** @param {string[]} errors */
function serious(errors) {
  return errors.filter((e) => e.startsWith('pageerror') || /Content Security Policy/i.test(e));
}

test('files, search, presence and notifications between two people', async (t) => {
  const v = await person('vera');
  const g = await person('gleb');
  const vera = v.page;
  const gleb = g.page;
  let dialogId = '';

  await t.test('vera opens a dialog with gleb', async () => {
    await vera.locator('.new-dialog').click();
    await vera.locator('.user-search-input').fill('gleb');
    await vera.locator('.user-result[data-login="gleb"]').click();
    await vera.locator('.pane-title', { hasText: 'gleb' }).waitFor();
    dialogId = (await vera.locator('.discussion.active').getAttribute('data-discussion')) ?? '';
    assert.ok(dialogId.includes('@'));
    await vera.locator('.composer-input').fill('Начнём');
    await vera.locator('.composer-input').press('Enter');
    await message(vera, 'Начнём').waitFor();
  });

  await t.test('the file policy refuses a script before a byte moves, naming the rule', async () => {
    /** @type {string[]} */
    const creates = [];
    vera.on('request', (r) => r.url().endsWith('/api/v1/uploads') && creates.push(r.url()));
    await vera.locator('.file-input').setInputFiles({ name: 'run.bat', mimeType: 'application/octet-stream', buffer: Buffer.from('echo') });
    await vera.locator('.file-notice', { hasText: 'files.blocked_extensions' }).waitFor();
    assert.match(await vera.locator('.file-notice').innerText(), /run\.bat/);
    assert.deepEqual(creates, []);
  });

  const big = randomBytes(CHUNK + 300_000);
  const bigSha = createHash('sha256').update(big).digest('hex');

  await t.test('an upload cut off mid-way resumes from the confirmed offset', async () => {
    /** @type {string[]} */
    const log = [];
    let cut = false;
    await vera.route(/\/api\/v1\/uploads\/[^/?]+(\?.*)?$/, async (route) => {
      const r = route.request();
      const offset = new URL(r.url()).searchParams.get('offset');
      log.push(`${r.method()} ${offset ?? ''}`.trim());
      if (r.method() === 'PUT' && offset === String(CHUNK) && !cut) {
        cut = true;
        await route.abort('connectionreset');
        return;
      }
      await route.continue();
    });
    await vera.locator('.file-input').setInputFiles({ name: 'отчёт.bin', mimeType: 'application/octet-stream', buffer: big });
    await vera.locator('.attachment[data-state="done"]', { hasText: 'отчёт.bin' }).waitFor({ timeout: 30_000 });
    await vera.unroute(/\/api\/v1\/uploads\/[^/?]+(\?.*)?$/);
    // The second chunk was cut; the client asked the node how far it came and went on from there.
    assert.deepEqual(log, ['PUT 0', `PUT ${CHUNK}`, 'GET', `PUT ${CHUNK}`]);
  });

  await t.test('a pasted or dropped image gets a preview', async () => {
    await vera.evaluate(async () => {
      const canvas = document.createElement('canvas');
      canvas.width = 64;
      canvas.height = 48;
      const ctx = canvas.getContext('2d');
      if (!ctx) throw new Error('no 2d context');
      ctx.fillStyle = '#2f5d8a';
      ctx.fillRect(0, 0, 64, 48);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
      const dt = new DataTransfer();
      dt.items.add(new File([/** @type {Blob} */ (blob)], 'схема.png', { type: 'image/png' }));
      const target = document.querySelector('.composer');
      target?.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      target?.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await vera.locator('.attachment[data-state="done"]', { hasText: 'схема.png' }).waitFor();
    await vera.locator('.composer-input').fill('Отчёт и схема');
    await vera.locator('.composer-input').press('Enter');
    await message(vera, 'Отчёт и схема').locator('.message-file').nth(1).waitFor();
    assert.equal(await vera.locator('.attachment').count(), 0);
  });

  await t.test('gleb sees the preview and downloads the file intact', async () => {
    await gleb.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    const m = message(gleb, 'Отчёт и схема');
    const img = m.locator('img.file-thumb');
    await img.waitFor();
    // A plain address naming the device (never a token): the browser fetches it with the cookie.
    assert.match((await img.getAttribute('src')) ?? '', /^\/api\/v1\/files\/[^/?]+\/thumbnail\?device=web-[0-9a-f]{16}$/);
    await gleb.waitForFunction(() => {
      const i = document.querySelector('img.file-thumb');
      return i instanceof HTMLImageElement && i.complete && i.naturalWidth > 0;
    });
    const file = m.locator('.message-file', { hasText: 'отчёт.bin' });
    const [download] = await Promise.all([gleb.waitForEvent('download'), file.locator('.download').click()]);
    assert.equal(download.suggestedFilename(), 'отчёт.bin');
    const path = await download.path();
    assert.equal(createHash('sha256').update(readFileSync(path)).digest('hex'), bigSha);
    await screenshots(gleb, 'files');
  });

  /**
   * Runs a search from vera's search dialog until the node's index has caught up (the
   * index commits in the background): re-asks on each answer that lacks `want`.
   * @param {string} query @param {(p: import('playwright-core').Page) => import('playwright-core').Locator} want
   */
  async function search(query, want) {
    const dialog = vera.locator('dialog.search-dialog');
    if (!(await dialog.isVisible())) await vera.locator('.open-search').click();
    await vera.locator('.search-input').fill(query);
    for (let attempt = 0; attempt < 40; attempt += 1) {
      const answered = vera.waitForResponse((r) => r.url().endsWith('/api/v1/rpc') && r.request().postDataJSON()?.method === 'search');
      await vera.locator('.search-form button[type="submit"]').click();
      await answered;
      await vera.locator('.search-results[aria-busy="false"]').waitFor();
      if ((await want(vera).count()) > 0) return;
    }
    assert.fail(`no result for ${query}`);
  }

  await t.test('search in Russian: a stemmed form finds the message, chips filter, a hit opens it', async () => {
    await gleb.locator('.composer-input').fill('Оплатили счета поставщикам');
    await gleb.locator('.composer-input').press('Enter');
    await message(vera, 'Оплатили счета поставщикам').waitFor();

    // «счёт» finds «счета»; from:gleb becomes a chip.
    await search('счёт from:gleb', (p) => p.locator('.search-hit', { hasText: 'поставщикам' }));
    await vera.locator('.chip[data-kind="from"]', { hasText: 'gleb' }).waitFor();
    assert.equal(await vera.locator('.search-input').inputValue(), 'счёт from:gleb');
    const hit = vera.locator('.search-hit', { hasText: 'поставщикам' });
    assert.match(await hit.locator('mark').first().innerText(), /счета/i);
    assert.equal(await vera.locator('.search-group h3').first().innerText(), 'gleb');
    await screenshots(vera, 'search');

    // The author chip filters: nothing of vera's says it.
    await search('счёт от:vera', (p) => p.locator('.search-empty'));
    await vera.locator('.chip[data-kind="from"]', { hasText: 'vera' }).waitFor();
    // has:file (in Russian) finds the message with the files by its text.
    await search('отчёт есть:файл', (p) => p.locator('.search-hit', { hasText: 'схема' }));
    await vera.locator('.chip[data-kind="has"]').waitFor();
    // Removing the chip keeps the words.
    await vera.locator('.chip[data-kind="has"] .chip-remove').click();
    assert.equal(await vera.locator('.search-input').inputValue(), 'отчёт');

    // Typed on the English layout: the node retries on the Russian one and says so.
    await search('cxtn', (p) => p.locator('.search-hit', { hasText: 'поставщикам' }));
    await vera.locator('.corrected', { hasText: 'счет' }).waitFor();

    await search('счёт from:gleb', (p) => p.locator('.search-hit', { hasText: 'поставщикам' }));
    assert.equal(await vera.locator('.corrected').count(), 0);
    await vera.locator('.search-hit', { hasText: 'поставщикам' }).click();
    await vera.locator('dialog.search-dialog').waitFor({ state: 'detached' });
    await message(vera, 'Оплатили счета поставщикам').and(vera.locator('.highlighted')).waitFor();
  });

  /** gleb's page again, with nothing open, counting chimes (oscillators made). */
  async function glebFresh() {
    await Promise.all([
      gleb.waitForResponse((r) => r.url().endsWith('/api/v1/rpc') && r.request().postDataJSON()?.method === 'notifications'),
      gleb.reload(),
    ]);
    await gleb.locator(`.discussion[data-discussion="${dialogId}"]`).waitFor();
  }
  /** @returns {Promise<number>} */
  const chimes = () => gleb.evaluate(() => /** @type {any} */ (window).__chimes);

  /** @param {string} level */
  async function glebLevel(level) {
    await gleb.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await gleb.locator(`.discussion[data-discussion="${dialogId}"] .unread-badge`).waitFor({ state: 'detached' });
    const stored = gleb.waitForResponse((r) => r.url().endsWith('/api/v1/rpc') && r.request().postDataJSON()?.method === 'set_notifications' && r.ok());
    await gleb.locator('.notify-level').selectOption(level);
    await stored;
  }

  /** vera writes; gleb's list shows it unread. @param {string} text @param {string} unread */
  async function veraWrites(text, unread) {
    await vera.locator('.composer-input').fill(text);
    await vera.locator('.composer-input').press('Enter');
    await gleb.locator(`.discussion[data-discussion="${dialogId}"] .unread-badge`, { hasText: unread }).waitFor();
  }

  await t.test('the notification level is respected: never is silent, every message chimes', async () => {
    await gleb.addInitScript(() => {
      const w = /** @type {any} */ (window);
      w.__chimes = 0;
      const make = AudioContext.prototype.createOscillator;
      AudioContext.prototype.createOscillator = function () {
        w.__chimes += 1;
        return make.call(this);
      };
    });
    await glebLevel('none');
    await glebFresh();
    await veraWrites('Тихое сообщение', '1');
    assert.equal(await chimes(), 0);

    await glebLevel('all');
    await glebFresh();
    assert.equal(await gleb.locator('.notify-level').count(), 0);
    await veraWrites('Громкое сообщение', '1');
    assert.ok((await chimes()) > 0, 'the chime played');
  });

  await t.test('a status set by gleb is seen by vera; DND silences the chime', async () => {
    await gleb.locator('.status-button').click();
    await gleb.locator('.status-choice input[value="dnd"]').check();
    await gleb.locator('.status-text-input').fill('На совещании');
    await gleb.locator('.save-status').click();
    await gleb.locator('.status-button', { hasText: ru['status.choice.dnd'] }).waitFor();

    await vera.locator(`.discussion[data-discussion="${dialogId}"] .presence-dnd`).waitFor();
    await vera.locator('.peer-status', { hasText: 'На совещании' }).waitFor();
    assert.match(await vera.locator('.peer-status').innerText(), new RegExp(ru['presence.dnd']));

    const before = await chimes();
    await veraWrites('Пока ты занят', '2');
    assert.equal(await chimes(), before);
    await screenshots(vera, 'presence');
  });

  await t.test('a push the node encrypted reaches the service worker, shown and closed once read', async () => {
    await v.context.grantPermissions(['notifications'], { origin: node.url });
    const cdp = await v.context.newCDPSession(vera);
    /** @type {Promise<string>} */
    const registration = new Promise((resolve) =>
      cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
        const r = registrations.find((x) => x.scopeURL === `${node.url}/` && !x.isDeleted);
        if (r) resolve(r.registrationId);
      }),
    );
    await cdp.send('ServiceWorker.enable');
    await vera.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    // Headless Chromium has no push service of its own: the subscription is the loopback
    // one, with keys this test holds, registered from the page as the client registers one.
    const keys = subscriptionKeys();
    /** @param {Record<string, unknown>} request */
    const veraRpc = (request) =>
      vera.evaluate(async (r) => {
        const res = await fetch('/api/v1/rpc', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
          body: JSON.stringify(r),
        });
        return { status: res.status, body: await res.json() };
      }, request);
    const registered = await veraRpc({
      method: 'register_push',
      target: { kind: 'web_push', endpoint: push.url, p256dh: keys.p256dh, auth: keys.authText },
    });
    assert.equal(registered.status, 200, JSON.stringify(registered.body));
    // Away by choice: the node pushes (it does not while she is active at a screen).
    await veraRpc({ method: 'set_presence', choice: 'away', status_text: '' });

    const text = 'Пуш: <b>не разметка</b>';
    await gleb.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await gleb.locator('.composer-input').fill(text);
    await gleb.locator('.composer-input').press('Enter');
    const posted = await push.next();
    assert.equal(posted.headers['content-encoding'], 'aes128gcm');
    assert.match(String(posted.headers.authorization), /^vapid /i);
    const data = decryptPush(posted.body, keys);
    const payload = JSON.parse(data);
    assert.equal(payload.type, 'message');
    assert.equal(payload.discussion, dialogId);
    assert.equal(payload.text, text);

    await cdp.send('ServiceWorker.deliverPushMessage', { origin: node.url, registrationId: await registration, data });
    const shown = await vera.waitForFunction(
      async (tag) => {
        const reg = await navigator.serviceWorker.ready;
        const list = await reg.getNotifications({ tag });
        return list.length > 0 && { title: list[0].title, body: list[0].body };
      },
      dialogId,
    );
    const who = payload.author_name || String(payload.author).split('@')[0];
    const count = Number(payload.count) > 1 ? ` (${payload.count})` : '';
    assert.deepEqual(await shown.jsonValue(), { title: `${payload.title || who}${count}`, body: `${who}: ${text}` });
    // The page tells the worker the discussion was read: its notifications close.
    await vera.evaluate((d) => navigator.serviceWorker.controller?.postMessage({ type: 'read', discussion: d }), dialogId);
    await vera.waitForFunction(async (tag) => (await (await navigator.serviceWorker.ready).getNotifications({ tag })).length === 0, dialogId);
    await veraRpc({ method: 'set_presence', choice: 'available', status_text: '' });
    await cdp.detach();
  });

  await t.test('no page errors and no CSP violations', async () => {
    assert.deepEqual(serious(v.errors), []);
    assert.deepEqual(serious(g.errors), []);
  });

  await v.context.close();
  await g.context.close();
});
