// Keyboard-only use, accessibility and the Russian screenshots: kira signs in
// and chats with the keyboard alone (switching discussions, sending, editing
// and replying), lev's new messages reach her screen reader through the live
// region, dialogs close on Escape and give focus back, and axe-core finds no
// serious or critical violation on the main screens.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { launchBrowser, message, screenshots, signedIn, watchErrors } from './browser.mjs';
import { startNode } from './node.mjs';

const PASSWORD = 'correct horse battery';
/** @type {Record<string, any>} */
const ru = JSON.parse(readFileSync(new URL('../src/i18n/ru.json', import.meta.url), 'utf8'));
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** @type {import('./node.mjs').RunningNode} */
let node;
/** @type {import('playwright-core').Browser} */
let browser;
before(async () => {
  node = await startNode({ users: ['kira', 'lev'].map((login) => ({ login, password: PASSWORD })) });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

/**
 * Runs axe-core in the page (evaluated through the driver, as the node's CSP
 * allows no injected script) and fails on any serious or critical violation.
 * @param {import('playwright-core').Page} page @param {string} screen
 */
async function axe(page, screen) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const r = await /** @type {any} */ (window).axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((/** @type {any} */ v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((/** @type {any} */ n) => n.target.join(' ')),
    }));
  });
  const bad = violations.filter((/** @type {any} */ v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${screen}: ${JSON.stringify(bad, null, 2)}`);
}

/**
 * Calls the node's RPC from the page (its session cookie and device header).
 * @param {import('playwright-core').Page} page @param {Record<string, unknown>} body
 */
function rpc(page, body) {
  return page.evaluate(async (b) => {
    const r = await fetch('/api/v1/rpc', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
      body: JSON.stringify(b),
    });
    if (!r.ok) throw new Error(`${b.method}: HTTP ${r.status} ${await r.text()}`);
    return r.json();
  }, body);
}

/**
 * Where focus is once it has come back to `selector`, or after 5 s: a closing dialog gives focus
 * back in its cleanup, which may run just after the dialog has left the DOM.
 * @param {import('playwright-core').Page} page
 * @param {string} selector
 */
async function focusReturns(page, selector) {
  await page.waitForFunction((s) => document.activeElement?.matches(s), selector, { timeout: 5000 }).catch(() => {});
  return focused(page);
}

/** What has focus: a short description for assertions. @param {import('playwright-core').Page} page */
function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return 'body';
    return `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className ? `.${String(el.className).trim().split(/\s+/).join('.')}` : ''}`;
  });
}

/** @param {import('playwright-core').Page} page */
function paneTitle(page) {
  return page.locator('.pane-title').innerText();
}

test('keyboard-only use, screen-reader announcements and axe checks, in Russian', { timeout: 240_000 }, async (t) => {
  // lev prepares two discussions with kira: a dialog and a group, each with a message.
  const l = await signedIn(browser, node.url, 'lev', PASSWORD);
  const lev = l.page;
  const dialog = (await rpc(lev, { method: 'open_dialog', with: 'kira' })).discussion.id;
  const group = (await rpc(lev, { method: 'create_group', title: 'Счёт 42', members: ['kira'] })).discussion.id;
  let n = 0;
  /** lev says `text` in `discussion` (through the node, not his page). */
  const say = (/** @type {string} */ discussion, /** @type {string} */ text) =>
    rpc(lev, { method: 'send', discussion, client_msg_id: `lev-${Date.now()}-${(n += 1)}`, text });
  await say(dialog, 'Кира, привет! Как дела со счётом?');
  await say(group, 'Счёт 42 выставлен, ждём оплату.');
  // lev keeps the dialog open, to see what kira sends.
  await lev.locator(`.discussion[data-discussion="${dialog}"]`).click();
  await message(lev, 'Как дела со счётом?').waitFor();

  const context = await browser.newContext({ locale: 'ru-RU', viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  const kira = await context.newPage();
  const errors = watchErrors(kira);

  await t.test('the sign-in form passes axe and works from the keyboard alone', async () => {
    await kira.goto(node.url);
    await kira.locator('#signin-login').waitFor();
    await axe(kira, 'sign-in');
    assert.equal(await focused(kira), 'input#signin-login');
    await kira.keyboard.type('kira');
    await kira.keyboard.press('Tab');
    assert.equal(await focused(kira), 'input#signin-password');
    await kira.keyboard.type(PASSWORD);
    await kira.keyboard.press('Enter');
    await kira.locator('.topbar').waitFor();
    await kira.locator(`.discussion[data-discussion="${group}"]`).waitFor();
    await kira.locator(`.discussion[data-discussion="${dialog}"]`).waitFor();
  });

  await t.test('Alt+↓ and Alt+↑ move between discussions, Ctrl+K finds one by name', async () => {
    // The group is newest, so first in the list.
    await kira.keyboard.press('Alt+ArrowDown');
    await kira.locator('.pane-title', { hasText: 'Счёт 42' }).waitFor();
    await kira.keyboard.press('Alt+ArrowDown');
    await kira.locator('.pane-title', { hasText: 'lev' }).waitFor();
    await kira.keyboard.press('Alt+ArrowUp');
    await kira.locator('.pane-title', { hasText: 'Счёт 42' }).waitFor();
    await message(kira, 'ждём оплату').waitFor();

    await kira.keyboard.press('Control+k');
    const switcher = kira.locator('dialog.switcher');
    await switcher.waitFor();
    assert.equal(await focused(kira), 'input.switcher-input');
    await kira.keyboard.type('le');
    await switcher.locator('.switcher-option.active', { hasText: 'lev' }).waitFor();
    await axe(kira, 'quick switcher');
    await screenshots(kira, 'switcher');
    await kira.keyboard.press('Enter');
    await switcher.waitFor({ state: 'detached' });
    assert.equal(await paneTitle(kira), 'lev');
    await message(kira, 'Как дела со счётом?').waitFor();
  });

  await t.test('Alt+Shift+↓ goes to the next unread discussion', async () => {
    const row = kira.locator(`.discussion[data-discussion="${group}"]`);
    await row.locator('.unread-badge').waitFor({ state: 'detached' });
    await say(group, 'Оплата пришла.');
    await row.locator('.unread-badge', { hasText: '1' }).waitFor();
    await kira.keyboard.press('Alt+Shift+ArrowDown');
    await kira.locator('.pane-title', { hasText: 'Счёт 42' }).waitFor();
    await message(kira, 'Оплата пришла.').waitFor();
    await kira.keyboard.press('Alt+ArrowDown');
    await kira.locator('.pane-title', { hasText: 'lev' }).waitFor();
  });

  await t.test('send, then ↑ edits the last own message, all from the keyboard', async () => {
    // Opening a discussion puts focus in its message box.
    assert.equal(await focused(kira), 'textarea.composer-input');
    await kira.keyboard.type('Всё хорошо, счёт оплачен');
    await kira.keyboard.press('Enter');
    await message(kira, 'Всё хорошо, счёт оплачен').waitFor();
    await message(lev, 'Всё хорошо, счёт оплачен').waitFor();

    await kira.keyboard.press('ArrowUp');
    await kira.locator('.composer-mode', { hasText: ru['composer.editing'] }).waitFor();
    // The box takes the message's text right after it shows the mode.
    await kira.waitForFunction(
      (want) => /** @type {HTMLTextAreaElement | null} */ (document.querySelector('.composer-input'))?.value === want,
      'Всё хорошо, счёт оплачен',
    );
    await kira.keyboard.press('End');
    await kira.keyboard.type(' вчера');
    await kira.keyboard.press('Enter');
    const edited = message(kira, 'счёт оплачен вчера');
    await edited.locator('.edited', { hasText: ru['message.edited'] }).waitFor();
    await message(lev, 'счёт оплачен вчера').locator('.edited').waitFor();
    assert.equal(await kira.locator('.composer-input').inputValue(), '');
    assert.equal(await kira.locator('.composer-mode').count(), 0);

    // Ctrl+↑ replies to the last message; Escape changes its mind.
    await kira.keyboard.press('Control+ArrowUp');
    await kira.locator('.composer-mode', { hasText: ru['composer.replying'].replace('{name}', 'kira') }).waitFor();
    await kira.keyboard.press('Escape');
    await kira.locator('.composer-mode').waitFor({ state: 'detached' });
  });

  await t.test('the message list: roving focus, R replies to the chosen message', async () => {
    // Back from the box to the newest message: Shift+Tab through its buttons.
    for (let i = 0; i < 8 && !(await focused(kira)).startsWith('article'); i += 1) await kira.keyboard.press('Shift+Tab');
    assert.match(await focused(kira), /^article\.message/);
    assert.equal(await kira.evaluate(() => document.activeElement?.textContent?.includes('оплачен вчера')), true);
    // Only one message is a tab stop.
    assert.equal(await kira.locator('article.message[tabindex="0"]').count(), 1);
    await kira.keyboard.press('ArrowUp');
    assert.equal(await kira.evaluate(() => document.activeElement?.textContent?.includes('Как дела со счётом?')), true);
    // Its buttons are reachable with Tab; the row of reactions closes on Escape.
    await kira.keyboard.press('Tab');
    assert.equal(await focused(kira), 'button.reply');
    await kira.keyboard.press('Tab');
    assert.equal(await focused(kira), 'button.react');
    await kira.keyboard.press('Enter');
    await kira.locator('.quick-reactions').waitFor();
    await kira.keyboard.press('Tab');
    assert.equal(await focused(kira), 'button.quick-reaction');
    await kira.keyboard.press('Escape');
    await kira.locator('.quick-reactions').waitFor({ state: 'detached' });
    assert.equal(await focusReturns(kira, 'button.react'), 'button.react');
    await kira.keyboard.press('Shift+Tab');
    await kira.keyboard.press('Shift+Tab');
    assert.match(await focused(kira), /^article\.message/);
    await kira.keyboard.press('r');
    await kira.locator('.composer-mode', { hasText: ru['composer.replying'].replace('{name}', 'lev') }).waitFor();
    // Focus follows into the box.
    await kira.waitForFunction(() => document.activeElement?.classList.contains('composer-input'));
    await kira.keyboard.type('Отвечаю с клавиатуры');
    await kira.keyboard.press('Enter');
    await message(lev, 'Отвечаю с клавиатуры').locator('.reply-quote', { hasText: 'Как дела со счётом?' }).waitFor();
  });

  await t.test('new messages are announced politely, a burst as one summary', async () => {
    const region = kira.locator('#announcer');
    assert.equal(await region.getAttribute('aria-live'), 'polite');
    await say(dialog, 'Спасибо, вижу');
    await kira.waitForFunction(() => document.getElementById('announcer')?.textContent?.includes('lev: Спасибо, вижу'));
    // No other live region repeats the list.
    assert.equal(await kira.locator('.messages [aria-live], .messages [role="log"]').count(), 0);
    // Five at once, sent one after another from within lev's page.
    await lev.evaluate(async (d) => {
      for (let i = 1; i <= 5; i += 1) {
        const r = await fetch('/api/v1/rpc', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
          body: JSON.stringify({ method: 'send', discussion: d, client_msg_id: `burst-${i}`, text: `Строка ${i}` }),
        });
        if (!r.ok) throw new Error(`send: HTTP ${r.status}`);
      }
    }, dialog);
    await kira.waitForFunction(
      (want) => document.getElementById('announcer')?.textContent?.startsWith(want),
      ru['announce.many'].many.replace('{n}', '5').replace('{discussion}', 'lev'),
    );
    assert.match((await region.textContent()) ?? '', /lev: Строка 5/);
    // kira's own messages are not read back to her.
    await kira.keyboard.type('Моё сообщение');
    await kira.keyboard.press('Enter');
    await message(kira, 'Моё сообщение').waitFor();
    assert.doesNotMatch((await region.textContent()) ?? '', /Моё сообщение/);
  });

  await t.test('the shortcuts list opens with Ctrl+/ and closes on Escape, focus back in the box', async () => {
    assert.equal(await focused(kira), 'textarea.composer-input');
    await kira.keyboard.press('Control+/');
    const help = kira.locator('dialog.keys-help');
    await help.waitFor();
    assert.equal(await help.evaluate((d) => /** @type {HTMLDialogElement} */ (d).open && d.matches(':modal')), true);
    await help.locator('kbd', { hasText: 'K' }).first().waitFor();
    await kira.keyboard.press('Escape');
    await help.waitFor({ state: 'detached' });
    assert.equal(await focusReturns(kira, 'textarea.composer-input'), 'textarea.composer-input');

    // Again for axe and the screenshots, which resize the window (a resize may move focus,
    // so focus is checked above, at one size).
    await kira.keyboard.press('Control+/');
    await help.locator('kbd', { hasText: 'K' }).first().waitFor();
    await axe(kira, 'shortcuts dialog');
    await screenshots(kira, 'keys');
    await kira.keyboard.press('Escape');
    await help.waitFor({ state: 'detached' });
  });

  await t.test('the list and message view, search and the status dialog pass axe', async () => {
    await axe(kira, 'list and message view');
    await screenshots(kira, 'chat-keys');

    // (The screenshots resized the window; start again from the box.)
    await kira.locator('.composer-input').focus();
    await kira.keyboard.press('Control+Shift+F');
    const search = kira.locator('dialog.search-dialog');
    await search.waitFor();
    assert.equal(await focused(kira), 'input.search-input');
    await kira.keyboard.type('счёт from:lev');
    await kira.keyboard.press('Enter');
    await kira.locator('.search-results[aria-busy="false"]').waitFor();
    await search.locator('.chip[data-kind="from"]').waitFor();
    await axe(kira, 'search');
    await kira.keyboard.press('Escape');
    await search.waitFor({ state: 'detached' });
    assert.equal(await focusReturns(kira, 'textarea.composer-input'), 'textarea.composer-input');

    await kira.locator('.status-button').focus();
    await kira.keyboard.press('Enter');
    const status = kira.locator('dialog.status-dialog');
    await status.waitFor();
    await axe(kira, 'status dialog');
    await screenshots(kira, 'status');
    await kira.keyboard.press('Escape');
    await status.waitFor({ state: 'detached' });
    // The screenshots resize the window, and the phone layout renders the button anew: focus
    // coming back is checked on a dialog opened and closed at one size.
    await kira.locator('.status-button').focus();
    await kira.keyboard.press('Enter');
    await status.waitFor();
    await kira.keyboard.press('Escape');
    await status.waitFor({ state: 'detached' });
    assert.equal(await focusReturns(kira, 'button.status-button.status-auto'), 'button.status-button.status-auto');
  });

  await t.test('the discussion list has one tab stop and arrow keys inside', async () => {
    const order = await kira.locator('.discussions button').evaluateAll((bs) => bs.map((b) => b.getAttribute('data-discussion')));
    assert.deepEqual([...order].sort(), [dialog, group].sort());
    // The open discussion is the tab stop.
    assert.deepEqual(await kira.locator('.discussions button[tabindex="0"]').evaluateAll((bs) => bs.map((b) => b.getAttribute('data-discussion'))), [dialog]);
    await kira.locator(`.discussion[data-discussion="${dialog}"]`).focus();
    const at = () => kira.evaluate(() => document.activeElement?.getAttribute('data-discussion'));
    await kira.keyboard.press('End');
    assert.equal(await at(), order[1]);
    await kira.keyboard.press('Home');
    assert.equal(await at(), order[0]);
    await kira.keyboard.press('ArrowDown');
    assert.equal(await at(), order[1]);
    await kira.keyboard.press('ArrowUp');
    assert.equal(await at(), order[0]);
    // Enter opens it; Alt+↓ goes on to the next.
    await kira.keyboard.press('Enter');
    await kira.locator(`.discussion.active[data-discussion="${order[0]}"]`).waitFor();
    await kira.keyboard.press('Alt+ArrowDown');
    await kira.locator(`.discussion.active[data-discussion="${order[1]}"]`).waitFor();
  });

  await t.test('English chosen in the status dialog follows kira to a new page', async () => {
    await kira.locator('.status-button').click();
    await kira.locator('.language-select').selectOption('en');
    await kira.locator('h2', { hasText: 'Status and notifications' }).waitFor();
    assert.equal(await kira.evaluate(() => document.documentElement.lang), 'en');
    await kira.keyboard.press('Escape');
    // A new context (no local copy) in a Russian browser: the node's preference decides.
    const other = await signedIn(browser, node.url, 'kira', PASSWORD);
    await other.page.locator('.open-search', { hasText: 'Search' }).waitFor();
    await other.context.close();
    await kira.locator('.status-button').click();
    await kira.locator('.language-select').selectOption('auto');
    await kira.locator('h2', { hasText: ru['status.title'] }).waitFor();
    await kira.keyboard.press('Escape');
  });

  assert.deepEqual(errors.filter((e) => e.startsWith('pageerror') || /Content Security Policy/i.test(e)), []);
  await context.close();
  await l.context.close();
});
