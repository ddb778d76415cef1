// Sign-in against a real node: wrong and right passwords, the cookie session
// across reloads, the sessions panel, sign-out, and two users at once.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { launchBrowser, screenshots, watchErrors } from './browser.mjs';
import { startNode } from './node.mjs';

const PASSWORD = 'correct horse battery';
/** @type {Record<string, string>} */
const ru = JSON.parse(readFileSync(new URL('../src/i18n/ru.json', import.meta.url), 'utf8'));

/** @type {import('./node.mjs').RunningNode} */
let node;
/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  node = await startNode({
    users: [
      { login: 'anna', password: PASSWORD },
      { login: 'boris', password: PASSWORD },
    ],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

/** @param {import('playwright-core').Browser} b */
function russianContext(b) {
  return b.newContext({ locale: 'ru-RU', viewport: { width: 1280, height: 800 } });
}

/**
 * Asks the node, from inside the page, who the cookie belongs to.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{ status: number, body: any }>}
 */
function whoami(page) {
  return page.evaluate(async () => {
    const r = await fetch('/api/v1/rpc', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? 'none' },
      body: JSON.stringify({ method: 'whoami' }),
    });
    return { status: r.status, body: await r.json().catch(() => null) };
  });
}

/**
 * Fills the form and presses Enter; resolves to the posted login body.
 * @param {import('playwright-core').Page} page @param {string} login @param {string} password
 */
async function signIn(page, login, password) {
  await page.locator('#signin-login').fill(login);
  await page.locator('#signin-password').fill(password);
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith('/api/v1/login') && r.method() === 'POST'),
    page.locator('#signin-password').press('Enter'),
  ]);
  return request.postDataJSON();
}

/**
 * Waits for the shell and checks it belongs to `login`; resolves to the node's UserInfo.
 * @param {import('playwright-core').Page} page @param {string} login
 */
async function expectShellFor(page, login) {
  await page.locator('header').waitFor();
  const me = await whoami(page);
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.equal(me.body.user.login, login);
  const name = me.body.user.display_name || me.body.user.login;
  await page.locator('header', { hasText: name }).waitFor();
  return me.body.user;
}

/** Console errors other than the expected 401s of a signed-out start and a wrong password. */
function unexpected(/** @type {string[]} */ errors) {
  return errors.filter((e) => !/Failed to load resource: the server responded with a status of 401/.test(e));
}

test('anna signs in, stays signed in, sees her sessions and signs out', { timeout: 120_000 }, async (t) => {
  const context = await russianContext(browser);
  const page = await context.newPage();
  const errors = watchErrors(page);
  t.after(() => context.close());

  await t.test('the sign-in form', async () => {
    await page.goto(node.url);
    await page.locator('#signin-login').waitFor();
    assert.equal(await page.title(), 'Veche');
    assert.equal(await page.locator('html').getAttribute('lang'), 'ru');
    await page.getByRole('button', { name: ru['signin.submit'] }).waitFor();
    await screenshots(page, 'signin');
  });

  await t.test('a wrong password shows the Russian error', async () => {
    await signIn(page, 'anna', 'wrong password');
    await page.locator('#signin-error', { hasText: ru['error.invalid_credentials'] }).waitFor();
    assert.equal(await page.locator('header').count(), 0);
    await screenshots(page, 'signin-error');
  });

  /** @type {any} */
  let posted;
  await t.test('the right password shows the shell with her name', async () => {
    posted = await signIn(page, 'anna', PASSWORD);
    assert.equal(posted.cookie, true);
    assert.match(posted.device_id, /^web-[0-9a-f]{16}$/);
    await expectShellFor(page, 'anna');
    await page.getByRole('navigation').waitFor();
    await page.getByRole('main').waitFor();
    await screenshots(page, 'shell');
  });

  await t.test('a reload keeps her signed in', async () => {
    await page.reload();
    await expectShellFor(page, 'anna');
    assert.equal(await page.locator('form').count(), 0);
  });

  await t.test('the sessions panel lists this browser', async () => {
    await page.getByRole('button', { name: ru['shell.sessions'] }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    const current = dialog.locator('li.session.current');
    await current.waitFor();
    assert.equal(await current.count(), 1);
    const text = await current.innerText();
    assert.ok(text.includes(posted.device_name), `"${text}" names ${posted.device_name}`);
    assert.ok(text.includes(ru['sessions.current']), text);
    assert.match(text, /\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}/);
    await screenshots(page, 'sessions');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
  });

  await t.test('sign-out returns to the form, and a reload stays signed out', async () => {
    await page.getByRole('button', { name: ru['shell.sign_out'] }).click();
    await page.locator('#signin-login').waitFor();
    assert.equal((await whoami(page)).status, 401);
    await page.reload();
    await page.locator('#signin-login').waitFor();
    assert.equal(await page.locator('header').count(), 0);
  });

  assert.deepEqual(unexpected(errors), []);
});

test('anna and boris are signed in at once, each as themselves', { timeout: 120_000 }, async (t) => {
  const [a, b] = await Promise.all([russianContext(browser), russianContext(browser)]);
  t.after(() => Promise.all([a.close(), b.close()]));
  const [pa, pb] = await Promise.all([a.newPage(), b.newPage()]);
  const errorsA = watchErrors(pa);
  const errorsB = watchErrors(pb);
  await Promise.all([pa.goto(node.url), pb.goto(node.url)]);
  await Promise.all([pa.locator('#signin-login').waitFor(), pb.locator('#signin-login').waitFor()]);
  await Promise.all([signIn(pa, 'anna', PASSWORD), signIn(pb, 'boris', PASSWORD)]);
  const [anna, boris] = await Promise.all([expectShellFor(pa, 'anna'), expectShellFor(pb, 'boris')]);
  assert.notEqual(anna.id, boris.id);

  await Promise.all([pa.reload(), pb.reload()]);
  await Promise.all([expectShellFor(pa, 'anna'), expectShellFor(pb, 'boris')]);
  const nameA = anna.display_name || anna.login;
  const nameB = boris.display_name || boris.login;
  if (nameA !== nameB) {
    assert.ok(!(await pb.locator('header').innerText()).includes(nameA));
    assert.ok(!(await pa.locator('header').innerText()).includes(nameB));
  }
  assert.deepEqual(unexpected([...errorsA, ...errorsB]), []);
});

test('ending another session signs that browser out', { timeout: 120_000 }, async (t) => {
  const [first, second] = await Promise.all([russianContext(browser), russianContext(browser)]);
  t.after(() => Promise.all([first.close(), second.close()]));
  const [p1, p2] = await Promise.all([first.newPage(), second.newPage()]);
  for (const page of [p1, p2]) {
    await page.goto(node.url);
    await page.locator('#signin-login').waitFor();
    await signIn(page, 'anna', PASSWORD);
    await expectShellFor(page, 'anna');
  }
  const device2 = await p2.evaluate(() => localStorage.getItem('veche.device'));

  await p1.getByRole('button', { name: ru['shell.sessions'] }).click();
  const dialog = p1.getByRole('dialog');
  await dialog.locator('li.session.current').waitFor();
  const before = await dialog.locator('li.session').count();
  assert.ok(before >= 2, `${before} sessions`);
  // The other browser's session: not the current one, and made by its device.
  const sessions = await p1.evaluate(async () => {
    const r = await fetch('/api/v1/rpc', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Veche-Device': localStorage.getItem('veche.device') ?? 'none' },
      body: JSON.stringify({ method: 'list_sessions' }),
    });
    return r.json();
  });
  const other = sessions.sessions.find((/** @type {any} */ s) => s.device_id === device2 && s.id !== sessions.current);
  assert.ok(other, JSON.stringify(sessions));
  await dialog.locator(`li[data-session="${other.id}"] button`).click();
  await dialog.locator(`li[data-session="${other.id}"]`).waitFor({ state: 'detached' });
  assert.equal(await dialog.locator('li.session').count(), before - 1);

  await p2.reload();
  await p2.locator('#signin-login').waitFor();
  await p1.reload();
  await expectShellFor(p1, 'anna');
});
