// Two people chatting through a real node, each in a browser context of their
// own: a dialog from the directory, unread badges, typing, mentions and
// emoji completion, reply/react/edit/delete, the send-key preference, the
// outbox (offline, and a reply lost after the node stored the message), and a
// group created, renamed and its members changed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { launchBrowser, message, screenshots, signedIn } from './browser.mjs';
import { startNode } from './node.mjs';

const PASSWORD = 'correct horse battery';
/** @type {Record<string, any>} */
const ru = JSON.parse(readFileSync(new URL('../src/i18n/ru.json', import.meta.url), 'utf8'));

/** @type {import('./node.mjs').RunningNode} */
let node;
/** @type {import('playwright-core').Browser} */
let browser;
before(async () => {
  node = await startNode({
    users: ['anna', 'boris', 'carol'].map((login) => ({ login, password: PASSWORD })),
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

/**
 * A signed-in page of its own browser context, in Russian.
 * @param {string} login
 */
async function person(login) {
  return signedIn(browser, node.url, login, PASSWORD);
}

/**
 * Asks the node, from the page, for the texts of a discussion's messages (up to 500).
 * @param {import('playwright-core').Page} page @param {string} discussion
 * @returns {Promise<string[]>}
 */
function nodeTexts(page, discussion) {
  return page.evaluate(async (d) => {
    const r = await fetch('/api/v1/rpc', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
      body: JSON.stringify({ method: 'history', discussion: d, limit: 500 }),
    });
    const body = await r.json();
    return body.events
      .filter((/** @type {any} */ e) => e.change.type === 'message_posted')
      .map((/** @type {any} */ e) => e.change.message.text ?? '');
  }, discussion);
}

/** @param {import('playwright-core').Page} page */
function composer(page) {
  return page.locator('.composer-input');
}

/** The node's answer to the page's next `set_preferences`. @param {import('playwright-core').Page} page */
function stored(page) {
  return page.waitForResponse(
    (r) => r.url().endsWith('/api/v1/rpc') && r.request().postDataJSON()?.method === 'set_preferences' && r.ok(),
  );
}

/** Only what matters: page errors and CSP violations (offline tests make network errors on purpose). */
function serious(/** @type {string[]} */ errors) {
  return errors.filter((e) => e.startsWith('pageerror') || /Content Security Policy/i.test(e));
}

test('two people chat in a dialog and a group', async (t) => {
  const a = await person('anna');
  const b = await person('boris');
  const anna = a.page;
  const boris = b.page;
  /** @type {string} */
  let dialogId = '';

  await t.test('anna opens a dialog with boris from the directory and sends a mention', async () => {
    await anna.locator('.new-dialog').click();
    await anna.locator('.user-search-input').fill('bor');
    await anna.locator('.user-result[data-login="boris"]').click();
    await anna.locator('.pane-title', { hasText: 'boris' }).waitFor();
    dialogId = (await anna.locator('.discussion.active').getAttribute('data-discussion')) ?? '';
    assert.ok(dialogId.includes('@'), dialogId);
    // boris is signed in: his presence dot says so.
    await anna.locator(`.discussion[data-discussion="${dialogId}"] .presence-available`).waitFor();

    // @mention completion over the dialog's members.
    await composer(anna).pressSequentially('Привет, @bo');
    await anna.locator('.completion', { hasText: '@boris' }).waitFor();
    await composer(anna).press('Enter');
    assert.equal(await composer(anna).inputValue(), 'Привет, @boris ');
    // :shortcode: completion with the emoji data the node serves.
    await composer(anna).pressSequentially('смотри :tada');
    await anna.locator('.completion', { hasText: '🎉' }).first().waitFor();
    await composer(anna).press('Enter');
    assert.equal(await composer(anna).inputValue(), 'Привет, @boris смотри 🎉 ');
    await composer(anna).press('Enter');
    await message(anna, 'Привет, @boris смотри 🎉').waitFor();
    assert.equal(await composer(anna).inputValue(), '');
  });

  await t.test('boris sees the unread badge, the title count and the highlighted mention', async () => {
    const row = boris.locator(`.discussion[data-discussion="${dialogId}"]`);
    await row.locator('.unread-badge', { hasText: '1' }).waitFor();
    await row.locator('.mention-badge').waitFor();
    await boris.waitForFunction(() => document.title === '(1) Veche');
    assert.equal(await boris.locator('link[rel="icon"]').getAttribute('href'), '/favicon-unread.svg');
    await row.click();
    const m = message(boris, 'Привет, @boris');
    await m.locator('.mention.mention-me', { hasText: '@boris' }).waitFor();
    // Read while on screen: the node's counts go to zero, and so do the badges.
    await row.locator('.unread-badge').waitFor({ state: 'detached' });
    await boris.waitForFunction(() => document.title === 'Veche');
    assert.equal(await boris.locator('link[rel="icon"]').getAttribute('href'), '/favicon.svg');
  });

  await t.test('typing is shown to the other side', async () => {
    await composer(boris).pressSequentially('Сейчас');
    await anna.locator('.typing', { hasText: ru['typing.one'].replace('{name}', 'boris') }).waitFor();
    await anna.locator(`.discussion[data-discussion="${dialogId}"] .discussion-typing`).waitFor();
  });

  await t.test('boris replies; the quote jumps to the original', async () => {
    await composer(boris).fill('');
    const original = message(boris, 'Привет, @boris');
    await original.hover();
    await original.locator('.reply').click();
    await boris.locator('.composer-mode', { hasText: 'anna' }).waitFor();
    await composer(boris).pressSequentially('Ответ на привет');
    await composer(boris).press('Enter');
    const reply = message(anna, 'Ответ на привет');
    await reply.locator('.reply-quote', { hasText: 'Привет, @boris' }).click();
    await message(anna, 'Привет, @boris').and(anna.locator('.highlighted')).waitFor();
    // Typing ended with the message.
    await anna.locator('.typing', { hasText: 'boris' }).waitFor({ state: 'detached' });
  });

  await t.test('a reaction names who reacted', async () => {
    const m = message(anna, 'Ответ на привет');
    await m.hover();
    await m.locator('.react').click();
    await m.locator('.quick-reaction', { hasText: '👍' }).click();
    const chip = message(boris, 'Ответ на привет').locator('.reaction', { hasText: '👍' });
    await chip.waitFor();
    assert.equal(await chip.getAttribute('title'), 'anna');
    assert.match(await chip.innerText(), /1/);
  });

  await t.test('an edit shows "(изменено)", which opens the edit history', async () => {
    const m = message(anna, 'Привет, @boris');
    await m.hover();
    await m.locator('.edit').click();
    await anna.locator('.composer-mode', { hasText: ru['composer.editing'] }).waitFor();
    await composer(anna).fill('Привет ещё раз');
    await composer(anna).press('Enter');
    const seen = message(boris, 'Привет ещё раз');
    await seen.locator('.edited', { hasText: ru['message.edited'] }).click();
    const dialog = boris.locator('dialog.edit-history');
    await dialog.locator('.version').nth(1).waitFor();
    assert.equal(await dialog.locator('.version').count(), 2);
    assert.match(await dialog.locator('.version').first().innerText(), /Привет, @boris смотри 🎉/);
    await dialog.locator('.close').click();
  });

  await t.test('a deleted message leaves a tombstone', async () => {
    await composer(anna).fill('Это сообщение будет удалено');
    await composer(anna).press('Enter');
    const m = message(anna, 'Это сообщение будет удалено');
    await message(boris, 'Это сообщение будет удалено').waitFor();
    anna.once('dialog', (d) => void d.accept());
    await m.hover();
    await m.locator('.delete').click();
    await boris.locator('.tombstone', { hasText: ru['message.deleted'] }).waitFor();
    await message(boris, 'Это сообщение будет удалено').waitFor({ state: 'detached' });
  });

  await t.test('Ctrl+Enter as the send key is stored on the node', async () => {
    await Promise.all([stored(boris), boris.locator('.send-key input').check()]);
    await composer(boris).fill('Первая строка');
    await composer(boris).press('Enter');
    assert.equal(await composer(boris).inputValue(), 'Первая строка\n');
    await composer(boris).pressSequentially('вторая');
    await composer(boris).press('Control+Enter');
    await message(anna, 'вторая').waitFor();
    await boris.reload();
    await boris.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await boris.locator('.send-key input:checked').waitFor();
    await Promise.all([stored(boris), boris.locator('.send-key input').uncheck()]);
  });

  await t.test("a message's buttons click through to its author", async () => {
    const posted = await boris.evaluate(async (d) => {
      const r = await fetch('/api/v1/rpc', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
        body: JSON.stringify({
          method: 'send',
          discussion: d,
          client_msg_id: 'with-buttons',
          text: 'Согласовать счёт?',
          actions: [{ id: 'approve', label: 'Согласовать' }],
        }),
      });
      return r.json();
    }, dialogId);
    const button = message(anna, 'Согласовать счёт?').locator('.bot-action', { hasText: 'Согласовать' });
    const [click] = await Promise.all([
      anna.waitForResponse((r) => r.url().endsWith('/api/v1/rpc') && r.request().postDataJSON()?.method === 'click'),
      button.click(),
    ]);
    assert.equal(click.status(), 200);
    assert.deepEqual(click.request().postDataJSON(), {
      method: 'click',
      discussion: dialogId,
      message_id: posted.message_id,
      action_id: 'approve',
    });
  });

  await t.test('a draft stays with its discussion', async () => {
    await composer(anna).fill('черновик для бориса');
    await anna.locator('.new-group').click();
    await anna.locator('dialog.people .close').click();
    await anna.reload();
    await anna.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    assert.equal(await composer(anna).inputValue(), 'черновик для бориса');
    await composer(anna).fill('');
  });

  await t.test('a message written offline is sent once after reconnecting', async () => {
    await a.context.setOffline(true);
    await composer(anna).fill('Написано без сети');
    await composer(anna).press('Enter');
    await anna.locator('.outbox-item.pending', { hasText: 'Написано без сети' }).waitFor();
    await a.context.setOffline(false);
    await anna.locator('.outbox-item').waitFor({ state: 'detached' });
    await message(boris, 'Написано без сети').waitFor();
    await message(anna, 'Написано без сети').waitFor();
    const texts = await nodeTexts(boris, dialogId);
    assert.equal(texts.filter((x) => x === 'Написано без сети').length, 1);
  });

  await t.test('a reply lost after the node stored the message: the reload resends it exactly once', async () => {
    // The node receives and stores the send, but its answer never reaches the page.
    await anna.route('**/api/v1/rpc', async (route) => {
      if (route.request().postDataJSON()?.method !== 'send') return route.continue();
      await route.fetch();
      await route.abort('connectionreset');
    });
    await composer(anna).fill('Ответ потерялся');
    await composer(anna).press('Enter');
    await message(boris, 'Ответ потерялся').waitFor();
    await anna.locator('.outbox-item.pending', { hasText: 'Ответ потерялся' }).waitFor();
    await anna.unroute('**/api/v1/rpc');
    const resent = anna.waitForRequest(
      (r) => r.url().endsWith('/api/v1/rpc') && r.postDataJSON()?.method === 'send' && r.postDataJSON()?.text === 'Ответ потерялся',
    );
    await anna.reload();
    await resent;
    await anna.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await message(anna, 'Ответ потерялся').waitFor();
    await anna.locator('.outbox-item').waitFor({ state: 'detached' });
    const texts = await nodeTexts(boris, dialogId);
    assert.equal(texts.filter((x) => x === 'Ответ потерялся').length, 1);
    assert.equal(await message(boris, 'Ответ потерялся').count(), 1);
  });

  await t.test('a refused message shows ✗ with the reason, and can be retried or discarded', async () => {
    const refuse = /** @param {import('playwright-core').Route} route */ (route) =>
      route.request().postDataJSON()?.method === 'send'
        ? route.fulfill({ status: 403, contentType: 'application/json', body: JSON.stringify({ error: { code: 'forbidden', message: 'запрещено правилом' } }) })
        : route.continue();
    await anna.route('**/api/v1/rpc', refuse);
    await composer(anna).fill('Повторю позже');
    await composer(anna).press('Enter');
    const failed = anna.locator('.outbox-item.failed', { hasText: 'Повторю позже' });
    await failed.locator('.outbox-failed', { hasText: 'запрещено правилом' }).waitFor();
    await composer(anna).fill('Не нужно');
    await composer(anna).press('Enter');
    const dropped = anna.locator('.outbox-item.failed', { hasText: 'Не нужно' });
    await dropped.waitFor();
    await anna.unroute('**/api/v1/rpc', refuse);
    await dropped.locator('.discard').click();
    await dropped.waitFor({ state: 'detached' });
    await failed.locator('.retry').click();
    await message(boris, 'Повторю позже').waitFor();
    await anna.locator('.outbox-item').waitFor({ state: 'detached' });
    const texts = await nodeTexts(boris, dialogId);
    assert.equal(texts.filter((x) => x === 'Повторю позже').length, 1);
    assert.equal(texts.filter((x) => x === 'Не нужно').length, 0);
  });

  await t.test('a long history is virtualized and loaded 50 at a time on scrolling up', async () => {
    // 120 messages from boris, posted through the node's HTTP API.
    await boris.evaluate(async (d) => {
      for (let i = 1; i <= 120; i += 1) {
        const r = await fetch('/api/v1/rpc', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? '' },
          body: JSON.stringify({ method: 'send', discussion: d, client_msg_id: `seed-${i}`, text: `seed ${String(i).padStart(3, '0')}` }),
        });
        if (!r.ok) throw new Error(`seed ${i}: ${r.status}`);
      }
    }, dialogId);
    /** @type {any[]} */
    const pages = [];
    anna.on('request', (r) => {
      if (r.url().endsWith('/api/v1/rpc') && r.postDataJSON()?.method === 'history') pages.push(r.postDataJSON());
    });
    await anna.reload();
    await anna.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await message(anna, 'seed 120').waitFor();
    // The newest is on screen: all read.
    await anna.locator(`.discussion[data-discussion="${dialogId}"] .unread-badge`).waitFor({ state: 'detached' });
    // Only what is on screen (and a margin) is in the DOM.
    const rendered = await anna.locator('.message').count();
    assert.ok(rendered < 60, `${rendered} messages rendered`);
    assert.equal(pages[0].limit, 50);
    assert.equal(pages[0].before, undefined);
    // Scroll up until the first one is there.
    await anna.waitForFunction(
      () => {
        const el = document.querySelector('.messages');
        if (el) el.scrollTop = 0;
        return [...document.querySelectorAll('.message-text')].some((e) => e.textContent === 'seed 001');
      },
      undefined,
      { polling: 100, timeout: 20_000 },
    );
    await anna.locator('.history-start', { hasText: ru['message.history_start'] }).waitFor();
    assert.ok(pages.length >= 3, JSON.stringify(pages));
    assert.ok(pages.slice(1).every((p) => typeof p.before === 'number' && p.limit === 50), JSON.stringify(pages));
    assert.ok((await anna.locator('.message').count()) < 60);
  });

  await t.test('a group is created, renamed, and its members changed', async () => {
    await anna.locator('.new-group').click();
    const form = anna.locator('dialog.people');
    await form.locator('.group-title-input').fill('Бухгалтерия');
    await form.locator('.user-search-input').fill('boris');
    await form.locator('.user-result[data-login="boris"]').click();
    await form.locator('.chip', { hasText: 'boris' }).waitFor();
    await form.locator('.create-group').click();
    await anna.locator('.pane-title', { hasText: 'Бухгалтерия' }).waitFor();
    await boris.locator('.discussion-name', { hasText: 'Бухгалтерия' }).waitFor();

    await anna.locator('.group-settings').click();
    const settings = anna.locator('dialog.people');
    await settings.locator('.member[data-user^="boris@"]').waitFor();
    await settings.locator('.rename-input').fill('Бухгалтерия 2026');
    await settings.locator('.rename-submit').click();
    await boris.locator('.discussion-name', { hasText: 'Бухгалтерия 2026' }).waitFor();

    await settings.locator('.user-search-input').fill('carol');
    await settings.locator('.user-result[data-login="carol"]').click();
    await settings.locator('.member[data-user^="carol@"]').waitFor();
    await settings.locator('.member[data-user^="carol@"] .remove-member').click();
    await settings.locator('.member[data-user^="carol@"]').waitFor({ state: 'detached' });
    await settings.locator('.close').click();

    await screenshots(anna, 'chat-group');
    await boris.locator('.discussion-name', { hasText: 'Бухгалтерия 2026' }).click();
    await boris.locator('.group-settings').click();
    await boris.locator('dialog.people .leave').click();
    await boris.locator('.discussion-name', { hasText: 'Бухгалтерия 2026' }).waitFor({ state: 'detached' });
  });

  await t.test('no page errors and no CSP violations', async () => {
    await anna.locator(`.discussion[data-discussion="${dialogId}"]`).click();
    await message(anna, 'seed 120').waitFor();
    await screenshots(anna, 'chat-dialog');
    assert.deepEqual(serious(a.errors), []);
    assert.deepEqual(serious(b.errors), []);
  });

  await a.context.close();
  await b.context.close();
});
