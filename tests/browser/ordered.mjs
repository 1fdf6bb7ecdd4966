// Drives an ordered route's blocked key on the ops dashboard in Debian's
// headless Chromium: the route's row names the key its dead letter blocks,
// "Dead letter" opens that dead letter, Replay frees the key, and the row
// no longer shows it blocked. Run by tests/it/dashboard.rs, which checks
// after that the key's waiting events went out in order, the replay last.
//
//   node ordered.mjs --url http://127.0.0.1:PORT --route NAME --key KEY \
//     --dead-letter ID --screenshot PATH
//   (the admin token comes from SWITCHYARD_ADMIN_TOKEN)

import { parseArgs } from 'node:util';
import { check, drive, requireOptions, signIn } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    route: { type: 'string' },
    key: { type: 'string' },
    'dead-letter': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
const token = requireOptions('ordered.mjs', opts, ['url', 'route', 'key', 'dead-letter', 'screenshot']);
const base = opts.url.replace(/\/+$/, '');
const deadLetter = opts['dead-letter'];

await drive('ordered.mjs', opts.screenshot, async (page, step) => {
  const row = page.locator(`#routes-table tr[data-route="${opts.route}"]`);
  const rowCount = async (label) => {
    const count = row.locator('.count').filter({ has: page.locator('.count-label', { hasText: new RegExp(`^${label}$`) }) });
    if (await count.count() === 0) return null;
    return Number((await count.locator('strong').textContent()).replace(/,/g, ''));
  };

  await step('sign in: the row names the blocked key and why the route fails', async () => {
    await page.goto(`${base}/?route=${encodeURIComponent(opts.route)}`);
    await signIn(page, token);
    await row.waitFor();
    check(await rowCount('keys blocked') === 1, `the row does not count 1 blocked key: ${await row.innerText()}`);
    check(await rowCount('keys waiting') === 1, `the row does not count 1 key waiting: ${await row.innerText()}`);
    const blocked = await row.locator('.blocked-keys').innerText();
    check(blocked.includes(opts.key), `the blocked key ${opts.key} is not named: ${blocked}`);
    const reasons = await row.locator('.reasons').innerText();
    check(reasons.includes('1 key blocked by its dead letter'), `the health does not say why: ${reasons}`);
  });

  await step('"Dead letter" opens the dead letter that blocks the key', async () => {
    await row.locator('.blocked-keys').getByRole('button', { name: 'Dead letter' }).click();
    const detail = page.locator('#detail');
    await detail.getByRole('heading', { name: /Attempts \(1\)/ }).waitFor();
    const text = await detail.innerText();
    check(text.includes(deadLetter), `the detail is not of ${deadLetter}: ${text}`);
  });

  await step('Replay frees the key: the row no longer shows it blocked', async () => {
    await page.locator('#detail').getByRole('button', { name: 'Replay' }).click();
    await page.locator('#notice').filter({ hasText: `Replayed ${deadLetter}` }).waitFor();
    const deadline = Date.now() + 15000;
    while (await rowCount('keys blocked') !== null || await row.locator('.blocked-keys').count() > 0) {
      check(Date.now() < deadline, `the key still shows blocked: ${await row.innerText()}`);
      await page.getByRole('button', { name: 'Refresh' }).click();
      await page.waitForTimeout(300);
    }
    check(await page.locator('#banner').isHidden(), `an error is shown: ${await page.locator('#banner-text').textContent()}`);
  });
});
