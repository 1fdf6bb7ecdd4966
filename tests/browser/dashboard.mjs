// Drives the switchyard ops dashboard in Debian's headless Chromium, as the
// on-call person would: open the alert's link (/?route=<route>), enter the
// admin token, find the failing route and its dead letter, open it, replay
// it, and see it go. Run by tests/it/dashboard.rs; never downloads a browser.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT --route NAME --dead-letter ID \
//     --team TEAM --healthy-route NAME --screenshot PATH [--screenshot PATH...] \
//     [--markup TEXT]   (a request header value that must show as text, not elements)
//   (the admin token comes from SWITCHYARD_ADMIN_TOKEN)
//
// Exits 0 when every step passed, 1 with the failed step and the reason.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { VIEWPORT, check, drive, requireOptions, signIn } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    route: { type: 'string' },
    'healthy-route': { type: 'string' },
    team: { type: 'string' },
    'dead-letter': { type: 'string' },
    markup: { type: 'string' },
    screenshot: { type: 'string', multiple: true },
  },
});
const token = requireOptions('dashboard.mjs', opts, ['url', 'route', 'healthy-route', 'team', 'dead-letter', 'screenshot']);
const base = opts.url.replace(/\/+$/, '');
const route = opts.route;
const deadLetter = opts['dead-letter'];

await drive('dashboard.mjs', opts.screenshot[0], async (page, step) => {
  await step('the alert link opens the page without a token', async () => {
    const response = await page.goto(`${base}/?route=${encodeURIComponent(route)}`);
    check(response && response.status() === 200, `GET / answered ${response && response.status()}`);
    const csp = response.headers()['content-security-policy'] ?? '';
    check(csp.includes("script-src 'self'"), `no strict Content-Security-Policy on the page: ${JSON.stringify(csp)}`);
    await page.locator('#signin').waitFor({ state: 'visible' });
    check(await page.locator('#app').isHidden(), 'the app shows before sign-in');
  });

  await step('a wrong token is refused with a clear message', async () => {
    await page.getByLabel('Admin token').fill('not-the-admin-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const message = page.locator('#signin-message');
    await message.waitFor({ state: 'visible' });
    const text = await message.textContent();
    check(/refused/i.test(text) && /401/.test(text), `the sign-in message does not say the token was refused: ${text}`);
    check(await page.evaluate(() => sessionStorage.length) === 0, 'a refused token was kept in sessionStorage');
  });

  await step('the right token signs in', async () => {
    await signIn(page, token);
    const stored = await page.evaluate(() => Object.values({ ...sessionStorage }));
    check(stored.includes(token), 'the token is not kept in sessionStorage');
  });

  await step('the inventory shows the failing route in red with its owner', async () => {
    const row = page.locator(`#routes-table tr[data-route="${route}"]`);
    await row.filter({ hasText: 'FAILING' }).waitFor();
    const text = await row.innerText();
    check(text.includes('1 dead letter'), `the failing route's row does not count its dead letter: ${text}`);
    check(text.includes(opts.team), `the failing route's row does not name team ${opts.team}: ${text}`);
    const runbook = row.getByRole('link', { name: 'Runbook' });
    const href = await runbook.getAttribute('href');
    check(href && href.startsWith('https://'), `runbook link: ${href}`);
    check(await row.evaluate((tr) => tr.classList.contains('health-bad')), 'the failing row is not marked bad');
    const healthy = page.locator(`#routes-table tr[data-route="${opts['healthy-route']}"]`);
    // The page shows the gateway's verdict (GET /admin/routes `health`), not one of its own.
    check(await row.getAttribute('data-health') === 'failing', 'the failing row does not show the API\'s health');
    check(await healthy.getAttribute('data-health') === 'ok', 'the healthy row does not show the API\'s health');
    const healthyText = await healthy.innerText();
    check(/\bOK\b/.test(healthyText) && !healthyText.includes('FAILING'),
      `the healthy route does not read OK: ${healthyText}`);
    const summary = await page.locator('#summary').textContent();
    check(summary.includes('1 failing'), `the summary does not say 1 failing: ${summary}`);
  });

  await step('?route= pre-fills the route filter and lists the dead letter', async () => {
    check(await page.locator('#filter-route').inputValue() === route, 'the route filter is not pre-filled from ?route=');
    const row = page.locator(`#dl-table tr[data-id="${deadLetter}"]`);
    await row.waitFor();
    const text = await row.innerText();
    for (const want of [route, opts.team, 'rejected', '400']) {
      check(text.includes(want), `the dead letter's row lacks ${JSON.stringify(want)}: ${text}`);
    }
  });

  await step('Details shows owner, attempts, headers and the pretty-printed body', async () => {
    await page.locator(`#dl-table tr[data-id="${deadLetter}"]`).getByRole('button', { name: 'Details' }).click();
    const detail = page.locator('#detail');
    await detail.getByRole('heading', { name: /Attempts \(1\)/ }).waitFor();
    const text = await detail.innerText();
    for (const want of [deadLetter, opts.team, 'rejected (HTTP 400)', 'x-github-delivery', 'Runbook']) {
      check(text.includes(want), `the detail lacks ${JSON.stringify(want)}`);
    }
    if (opts.markup) {
      check(text.includes(opts.markup), 'the request header with markup is not shown as text');
      const injected = await detail.locator('#injected, b').count();
      check(injected === 0, 'markup from the request became elements on the page');
    }
    const body = await detail.locator('pre.body').textContent();
    check(/^\{\n {2}"/.test(body), `the JSON body is not pretty-printed: ${body}`);
    const attempt = await detail.locator('table.attempts tbody tr').first().innerText();
    check(attempt.includes('400') && /\d+ ms/.test(attempt), `the attempt row lacks status and latency: ${attempt}`);
  });

  await step('it fits a 1366 px laptop screen without sideways scrolling', async () => {
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    check(width <= VIEWPORT.width, `the page is ${width} px wide, wider than the ${VIEWPORT.width} px window`);
  });

  await step('full-page screenshot', async () => {
    // Let the smooth scroll and fonts settle so the picture is stable.
    await page.evaluate(() => document.fonts.ready);
    const png = await page.screenshot({ fullPage: true });
    for (const path of opts.screenshot) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, png);
    }
  });

  await step('bulk replay first counts what it would replay, and Cancel sends nothing', async () => {
    await page.getByRole('button', { name: 'Replay all matching…' }).click();
    const panel = page.locator('#bulk');
    await panel.getByRole('button', { name: 'Replay 1 dead letter' }).waitFor();
    const text = await panel.innerText();
    check(text.includes(`route = ${route}`) && text.includes(opts.team), `the confirmation lacks the filter or team: ${text}`);
    await panel.getByRole('button', { name: 'Cancel' }).click();
    await panel.waitFor({ state: 'hidden' });
  });

  await step('without a route, owner or source, bulk replay asks twice and names every team', async () => {
    await page.getByRole('button', { name: 'Clear filters' }).click();
    await page.locator('#dl-status').filter({ hasText: 'Showing 1 dead letter, newest first.' }).waitFor();
    check(!page.url().includes('route='), `the cleared filter stays in the URL: ${page.url()}`);
    await page.getByRole('button', { name: 'Replay all matching…' }).click();
    const panel = page.locator('#bulk');
    await panel.getByRole('button', { name: 'Continue…' }).click();
    const everyone = panel.getByRole('button', { name: "Yes, replay every team's dead letters" });
    await everyone.waitFor();
    const text = await panel.innerText();
    check(/every team/i.test(text), `the second confirmation does not say every team: ${text}`);
    await panel.getByRole('button', { name: 'Cancel' }).click();
    await panel.waitFor({ state: 'hidden' });
    await page.locator('#filter-route').selectOption(route);
    await page.locator('#dl-status').filter({ hasText: `matching route = ${route}` }).waitFor();
    check(page.url().includes(`route=${route}`), `the filter is not in the URL: ${page.url()}`);
    await page.locator(`#dl-table tr[data-id="${deadLetter}"]`).waitFor();
  });

  await step('Replay removes the dead letter from the page', async () => {
    await page.locator('#detail').getByRole('button', { name: 'Replay' }).click();
    await page.locator(`#dl-table tr[data-id="${deadLetter}"]`).waitFor({ state: 'detached' });
    await page.locator('#notice').filter({ hasText: `Replayed ${deadLetter}` }).waitFor();
    check(await page.locator('#detail').isHidden(), 'the detail of the replayed dead letter is still open');
    check(await page.locator('#banner').isHidden(), `an error is shown: ${await page.locator('#banner-text').textContent()}`);
  });

  await step('a reload stays signed in and the dead letter stays gone', async () => {
    await page.reload();
    await page.locator('#app').waitFor({ state: 'visible' });
    await page.locator('#dl-status').filter({ hasText: /No dead letters/ }).waitFor();
    check(await page.locator(`#dl-table tr[data-id="${deadLetter}"]`).count() === 0, 'the replayed dead letter is back');
  });

  await step('sign out forgets the token', async () => {
    await page.getByRole('link', { name: 'Sign out' }).click();
    await page.locator('#signin').waitFor({ state: 'visible' });
    check(await page.evaluate(() => sessionStorage.length) === 0, 'the token is still in sessionStorage');
    check(await page.locator('#routes-table tbody tr').count() === 0, 'route data stays on the page after sign out');
  });
});
