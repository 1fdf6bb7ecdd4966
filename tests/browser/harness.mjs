// What every browser test of the ops dashboard shares: Debian's headless
// Chromium through playwright-core (never a downloaded browser), named steps
// that fail with a reason, a screenshot of a failure, and a last check that
// the page had no script errors and no Content-Security-Policy violations.

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
export const VIEWPORT = { width: 1366, height: 850 };
const STEP_TIMEOUT_MS = 15000;

export class StepFailed extends Error {}

export function check(condition, message) {
  if (!condition) throw new StepFailed(message);
}

/** Exits with 2 naming what is missing from the options or the environment. */
export function requireOptions(script, opts, names) {
  const missing = names.filter((k) => !opts[k]).map((k) => '--' + k);
  if (!process.env.SWITCHYARD_ADMIN_TOKEN) missing.push('SWITCHYARD_ADMIN_TOKEN');
  if (missing.length) {
    console.error(`${script}: missing ${missing.join(', ')}`);
    process.exit(2);
  }
  return process.env.SWITCHYARD_ADMIN_TOKEN;
}

/**
 * Runs `steps(page, step)` in a fresh browser profile and exits 0 when every
 * step passed, 1 with the failed step and its reason. `failureShot` names
 * where a screenshot of a failure goes (with `-failure` before `.png`).
 */
export async function drive(script, failureShot, steps) {
  const profile = mkdtempSync(join(tmpdir(), 'switchyard-dashboard-'));
  const pageErrors = [];
  const cspViolations = [];
  let current = 'start';
  let context;
  let page;
  let failed = false;
  const step = async (name, body) => {
    current = name;
    const started = Date.now();
    await body();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  };
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
      viewport: VIEWPORT,
      reducedMotion: 'reduce',
      locale: 'en-US',
      timezoneId: 'UTC',
    });
    page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    page.on('console', (msg) => {
      if (/Content Security Policy|Refused to (load|execute|apply|connect)/i.test(msg.text())) {
        cspViolations.push(msg.text());
      }
    });
    await steps(page, step);
    await step('no script errors and no CSP violations', async () => {
      check(pageErrors.length === 0, `script errors on the page: ${pageErrors.join(' | ')}`);
      check(cspViolations.length === 0, `Content-Security-Policy violations: ${cspViolations.join(' | ')}`);
    });
    console.log(`${script}: every step passed`);
  } catch (err) {
    failed = true;
    const reason = err instanceof StepFailed ? err.message : (err && err.stack) || String(err);
    console.error(`${script}: FAILED at step "${current}": ${reason}`);
    if (page) await reportFailure(page, failureShot);
    if (pageErrors.length) console.error(`script errors: ${pageErrors.join(' | ')}`);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}

async function reportFailure(page, failureShot) {
  try {
    if (await page.locator('#banner').isVisible()) {
      console.error(`the page's error banner: ${await page.locator('#banner-text').textContent({ timeout: 1000 })}`);
    }
  } catch {
    // no page to ask
  }
  try {
    const path = failureShot.replace(/\.png$/, '') + '-failure.png';
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, await page.screenshot({ fullPage: true, timeout: 5000 }));
    console.error(`screenshot of the failure: ${path}`);
  } catch {
    // the browser may be gone
  }
}

/** Enters the admin token on the sign-in form and waits for the app. */
export async function signIn(page, token) {
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#app').waitFor({ state: 'visible' });
}
