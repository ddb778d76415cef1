// Debian's Chromium driven by playwright-core (no browser downloads).
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Where screenshots go for a person to review: web/test-results/screens/. */
export const SCREENS = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'test-results', 'screens');

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
  });
}

/**
 * Saves `<name>-<width>x<height>.png` for each viewport size, then restores the first size.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 * @param {Array<{ width: number, height: number }>} sizes
 */
export async function screenshots(page, name, sizes = [{ width: 1280, height: 800 }, { width: 400, height: 700 }]) {
  await mkdir(SCREENS, { recursive: true });
  const before = page.viewportSize();
  for (const size of sizes) {
    await page.setViewportSize(size);
    await page.screenshot({ path: join(SCREENS, `${name}-${size.width}x${size.height}.png`) });
  }
  if (before) await page.setViewportSize(before);
}

/**
 * Collects what would otherwise go unnoticed: uncaught errors and console
 * errors (CSP violations are reported there).
 * @param {import('playwright-core').Page} page
 * @returns {string[]}
 */
export function watchErrors(page) {
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/**
 * A page of a browser context of its own, in Russian at 1280×800, signed in as
 * `login` at the node's `url`; `errors` collects what `watchErrors` sees.
 * @param {import('playwright-core').Browser} browser
 * @param {string} url @param {string} login @param {string} password
 */
export async function signedIn(browser, url, login, password) {
  const context = await browser.newContext({ locale: 'ru-RU', viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(url);
  await page.locator('#signin-login').fill(login);
  await page.locator('#signin-password').fill(password);
  await page.locator('#signin-password').press('Enter');
  await page.locator('.topbar').waitFor();
  return { context, page, errors };
}

/**
 * The message whose text contains `text`.
 * @param {import('playwright-core').Page} page @param {string} text
 */
export function message(page, text) {
  return page.locator('.message', { has: page.locator('.message-text', { hasText: text }) });
}
