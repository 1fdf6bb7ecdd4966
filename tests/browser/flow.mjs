// Drives flow control on the ops dashboard in Debian's headless Chromium:
// pause a route with a reason, see it paused, replay its dead letters at a
// pace and watch the replay job to the end (into the paused route, so they
// are held), see them held, resume at a rate and see them drain. Run by
// tests/it/dashboard.rs, which checks the receiver and the audit log after.
//
//   node flow.mjs --url http://127.0.0.1:PORT --route NAME --dead-letters N \
//     --by TOKEN_NAME --reason TEXT --replay-rate RATE --drain-rate RATE \
//     --rate-limit RATE --screenshot PATH
//   (the admin token comes from SWITCHYARD_ADMIN_TOKEN)

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { check, drive, requireOptions, signIn } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    route: { type: 'string' },
    'dead-letters': { type: 'string' },
    by: { type: 'string' },
    reason: { type: 'string' },
    'replay-rate': { type: 'string' },
    'drain-rate': { type: 'string' },
    'rate-limit': { type: 'string' },
    screenshot: { type: 'string' },
  },
});
const token = requireOptions('flow.mjs', opts,
  ['url', 'route', 'dead-letters', 'by', 'reason', 'replay-rate', 'drain-rate', 'rate-limit', 'screenshot']);
const base = opts.url.replace(/\/+$/, '');
const route = opts.route;
const total = Number(opts['dead-letters']);

await drive('flow.mjs', opts.screenshot, async (page, step) => {
  const row = page.locator(`#routes-table tr[data-route="${route}"]`);
  /** The number a count of the route's row shows ("held", "dead letters"...). */
  const rowCount = async (label) => {
    const text = await row.locator('.count').filter({ has: page.locator('.count-label', { hasText: new RegExp(`^${label}$`) }) })
      .locator('strong').textContent();
    return Number(text.replace(/,/g, ''));
  };
  /** Clicks Refresh until `want()` holds (the page refreshes on its own every 15 s). */
  const refreshUntil = async (what, want) => {
    const deadline = Date.now() + 15000;
    while (!(await want())) {
      check(Date.now() < deadline, `the route's row never showed ${what}: ${await row.innerText()}`);
      await page.getByRole('button', { name: 'Refresh' }).click();
      await page.waitForTimeout(300);
    }
  };

  await step('sign in on the route\'s link', async () => {
    await page.goto(`${base}/?route=${encodeURIComponent(route)}`);
    await signIn(page, token);
    await row.waitFor();
    check(await rowCount('dead letters') === total, `the row does not count ${total} dead letters: ${await row.innerText()}`);
    const text = await row.innerText();
    check(text.includes(`rate limit ${opts['rate-limit']}`), `the row does not show the destination's rate limit: ${text}`);
  });

  await step('Pause asks for a reason and will not pause without one', async () => {
    await row.getByRole('button', { name: 'Pause…' }).click();
    const panel = page.locator('#flow');
    await panel.getByRole('button', { name: `Pause ${route}` }).click();
    const valid = await panel.locator('#flow-reason').evaluate((input) => input.checkValidity());
    check(!valid, 'an empty reason passes the form');
    check(await row.getByRole('button', { name: 'Pause…' }).count() === 1, 'the route paused without a reason');
  });

  await step('with a reason the route is paused, and the row says by whom and why', async () => {
    const panel = page.locator('#flow');
    await panel.locator('#flow-reason').fill(opts.reason);
    await panel.getByRole('button', { name: `Pause ${route}` }).click();
    await panel.waitFor({ state: 'hidden' });
    await row.locator('.paused').waitFor();
    const text = await row.locator('.paused').innerText();
    check(text.includes(opts.reason) && text.includes(opts.by), `the paused note lacks the reason or who: ${text}`);
    const reasons = await row.locator('.reasons').innerText();
    check(reasons.includes(`paused by ${opts.by}`), `the health reasons do not say paused: ${reasons}`);
    await row.getByRole('button', { name: 'Resume…' }).waitFor();
  });

  let sawProgress = false;
  await step('a paced bulk replay shows its progress to the end', async () => {
    await page.getByRole('button', { name: 'Replay all matching…' }).click();
    const bulk = page.locator('#bulk');
    await bulk.getByRole('button', { name: `Replay ${total} dead letters` }).waitFor();
    await bulk.locator('#bulk-rate').fill(opts['replay-rate']);
    await bulk.getByRole('button', { name: `Replay ${total} dead letters` }).click();
    const job = page.locator('#replay-job');
    await job.waitFor({ state: 'visible' });
    const deadline = Date.now() + 30000;
    let last = '';
    for (;;) {
      const state = await job.getAttribute('data-state');
      last = await job.innerText();
      const done = Number((last.match(/([\d,]+) of [\d,]+ dead letters? handled/) || [])[1]?.replace(/,/g, '') ?? NaN);
      if (state === 'running' && done > 0 && done < total) sawProgress = true;
      if (state !== 'running') break;
      check(Date.now() < deadline, `the replay job is still running after 30 s: ${last}`);
      await page.waitForTimeout(200);
    }
    check(await job.getAttribute('data-state') === 'done', `the replay job did not end done: ${last}`);
    check(sawProgress, 'the replay job was never seen part-way (its progress did not move on the page)');
    check(last.includes(`${total} replayed`) && last.includes(`Pace ${opts['replay-rate']}`),
      `the finished job does not say ${total} replayed at ${opts['replay-rate']}: ${last}`);
    await page.locator('#dl-status').filter({ hasText: /No dead letters match/ }).waitFor();
  });

  await step('the replayed events are held by the paused route', async () => {
    await refreshUntil(`${total} held`, async () => await rowCount('held') === total);
    check(await row.locator('.paused').count() === 1, 'the route is no longer shown paused');
    check(await row.getAttribute('data-health') === 'warning',
      `a paused route without dead letters is not a warning: ${await row.getAttribute('data-health')}`);
    await page.evaluate(() => document.fonts.ready);
    const png = await page.screenshot({ fullPage: true });
    mkdirSync(dirname(opts.screenshot), { recursive: true });
    writeFileSync(opts.screenshot, png);
  });

  await step('resume at a rate drains the held events', async () => {
    await row.getByRole('button', { name: 'Resume…' }).click();
    const panel = page.locator('#flow');
    const text = await panel.innerText();
    check(text.includes(`${total} held events`), `the resume panel does not say how many are held: ${text}`);
    await panel.locator('#flow-rate').fill(opts['drain-rate']);
    await panel.getByRole('button', { name: `Resume ${route}` }).click();
    await panel.waitFor({ state: 'hidden' });
    await page.locator('#notice').filter({ hasText: `Resumed ${route}` }).waitFor();
    const notice = await page.locator('#notice').textContent();
    check(notice.includes(`at ${opts['drain-rate']}`), `the notice does not give the drain rate: ${notice}`);
    await row.getByRole('button', { name: 'Pause…' }).waitFor();
    check(await row.locator('.paused').count() === 0, 'the route is still shown paused');
    // The page refreshes itself every 2 s while a route drains: no clicks.
    const deadline = Date.now() + 20000;
    while (await rowCount('held') !== 0) {
      check(Date.now() < deadline, `the held events did not drain on the page: ${await row.innerText()}`);
      await page.waitForTimeout(250);
    }
    check(await page.locator('#banner').isHidden(), `an error is shown: ${await page.locator('#banner-text').textContent()}`);
  });
});
