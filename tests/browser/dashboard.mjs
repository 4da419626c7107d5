// Drives Debian's chromium through the hub's dashboard for
// tests/api/dashboard.rs. Environment: HUB (the hub's base URL), SCENARIO
// (`rollback` or `pause`), DEPLOYMENT (the deployment to watch), TOKEN (an
// operator's), VIEWER_TOKEN (`pause`), SERVERS (servers the fleet view must
// count), SHOTS (where screenshots go). Talks to the test over stdio:
// prints `READY` when the page shows the running canary and, for
// `rollback`, waits for `GO` (the regression is injected) on stdin;
// prints `PASS ...` and exits 0, or `FAIL ...` and exits 1.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { HUB, SCENARIO, DEPLOYMENT, TOKEN, VIEWER_TOKEN, SERVERS, SHOTS } = process.env;
const shots = SHOTS || 'screenshots';
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (line) => waiting.shift()?.(line.trim()));
const nextLine = () => new Promise((resolve) => waiting.push(resolve));
const problems = [];

function fail(message) {
  console.log(`FAIL ${message}${problems.length ? ` (the page said: ${problems.join('; ')})` : ''}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

const pages = [];

// `refusals`: this page provokes 403s on purpose (the browser logs them).
async function signedIn(token, refusals = false) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  pages.push(page);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    const expected = refusals && message.text().includes('status of 403');
    if (message.type() === 'error' && !expected) problems.push(`console: ${message.text()}`);
  });
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${HUB}/dashboard/`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${HUB}/dashboard/`), page.click('#sign-in')]);
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10000 });
  return page;
}

async function openDeployment(page) {
  await page.click('nav a[data-view="deployments"]');
  await page.click(`tr[data-deployment="${DEPLOYMENT}"]`);
  await page.waitForSelector(`#deployment-view[data-id="${DEPLOYMENT}"][data-status="InProgress"]`, { timeout: 10000 });
}

try {
  if (SCENARIO === 'rollback') {
    const page = await signedIn(TOKEN);
    await page.waitForFunction((n) => document.querySelector('[data-metric="servers"]')?.textContent === n, SERVERS, { timeout: 10000 });
    await page.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });
    await openDeployment(page);
    // The charts draw both cohorts as their points arrive.
    await page.waitForFunction(() => [...document.querySelectorAll('.chart')].every((c) => Number(c.dataset.points) >= 2 && c.dataset.cohorts?.includes('canary') && c.querySelector('canvas')), null, { timeout: 15000 });
    await page.waitForSelector('tr[data-rule="crashRate"] .badge', { timeout: 10000 });
    await page.evaluate(() => { window.sameDocument = true; });
    await page.screenshot({ path: join(shots, 'canary-running.png'), fullPage: true });
    console.log('READY');
    if ((await nextLine()) !== 'GO') fail('expected GO');
    const injected = Date.now();
    await page.waitForSelector('#deployment-view[data-status="RolledBack"]', { timeout: 30000 });
    const shown = Date.now() - injected;
    await page.waitForSelector('li[data-step="regression detected"]', { timeout: 5000 });
    await page.waitForSelector('li[data-step="rollback completed"]', { timeout: 15000 });
    const same = await page.evaluate(() => window.sameDocument === true);
    if (!same) fail('the page was reloaded');
    const detected = await page.textContent('li[data-step="regression detected"]');
    if (!detected.includes('automatic') || !detected.includes('crashRate')) fail(`detection says: ${detected}`);
    if ((await page.locator('button[data-action="pause"]').count()) !== 0) fail('a rolled-back deployment still offers pause');
    await page.screenshot({ path: join(shots, 'rolled-back.png'), fullPage: true });
    if (problems.length) fail(problems.join('; '));
    console.log(`PASS rollback shown ${shown} ms after the regression was injected, without a reload`);
  } else if (SCENARIO === 'pause') {
    // A viewer watches: no controls, and the API refuses a viewer's write.
    const viewer = await signedIn(VIEWER_TOKEN, true);
    await openDeployment(viewer);
    if ((await viewer.locator('button[data-action]').count()) !== 0) fail('a viewer sees controls');
    const refused = await viewer.evaluate(async (id) => {
      const session = await (await fetch('/dashboard/session')).json();
      const answer = await fetch(`/api/v1/deployments/${id}/pause`, { method: 'POST', headers: { 'x-csrf-token': session.csrfToken } });
      const bare = await fetch(`/api/v1/deployments/${id}/pause`, { method: 'POST' });
      return [session.role, answer.status, bare.status];
    }, DEPLOYMENT);
    if (JSON.stringify(refused) !== JSON.stringify(['viewer', 403, 403])) fail(`a viewer's pause: ${refused}`);
    await viewer.screenshot({ path: join(shots, 'viewer.png'), fullPage: true });
    // An operator pauses, and the page shows it without a reload.
    const page = await signedIn(TOKEN);
    await openDeployment(page);
    await page.evaluate(() => { window.sameDocument = true; });
    await page.click('button[data-action="pause"]');
    await page.waitForSelector('#deployment-view[data-status="Paused"]', { timeout: 10000 });
    await page.waitForSelector('button[data-action="resume"]', { timeout: 5000 });
    if (!(await page.evaluate(() => window.sameDocument === true))) fail('the page was reloaded');
    // The viewer's page follows through the feed.
    await viewer.waitForSelector('#deployment-view[data-status="Paused"]', { timeout: 10000 });
    await page.screenshot({ path: join(shots, 'paused.png'), fullPage: true });
    // Live events: occurrences now (overlapping) and ahead, participation,
    // and an event ended from its row.
    await page.click('nav a[data-view="events"]');
    await page.waitForSelector('.gantt-row[data-event="double-xp"] .bar[data-phase="active"].overlap', { timeout: 10000 });
    await page.waitForSelector('.gantt-row[data-event="winter-fest"] .bar[data-phase="scheduled"]', { timeout: 5000 });
    await page.click('tr[data-event="double-xp"] a');
    await page.waitForSelector('.participation[data-event="double-xp"] table', { timeout: 10000 });
    await page.click('tr[data-event="rifle-week"] button[data-action="end:rifle-week"]');
    await page.waitForSelector('tr[data-event="rifle-week"] .badge[data-status="Ended"]', { timeout: 10000 });
    await page.screenshot({ path: join(shots, 'events.png'), fullPage: true });
    // Experiments: units per variant with the split's check, and lift.
    await page.click('nav a[data-view="experiments"]');
    await page.click('tr[data-experiment="hot-rifle"]');
    await page.waitForSelector('.results[data-experiment="hot-rifle"] table', { timeout: 10000 });
    const split = await page.textContent('.results[data-experiment="hot-rifle"] p');
    if (!/control \d+ · hot \d+/.test(split) || !/split|mismatch/.test(split)) fail(`the split reads: ${split}`);
    await page.screenshot({ path: join(shots, 'experiments.png'), fullPage: true });
    // Signing out forgets the cookie: the sign-in form again.
    await page.click('#sign-out');
    await page.waitForSelector('#token', { timeout: 5000 });
    if (problems.length) fail(problems.join('; '));
    console.log('PASS paused from the dashboard; the viewer saw no controls and followed');
  } else {
    fail(`unknown scenario ${SCENARIO}`);
  }
} catch (error) {
  // What each page showed, for the failure's message and a screenshot.
  for (const [n, page] of pages.entries()) {
    const seen = await page.evaluate(() => ({
      main: document.querySelector('main')?.innerText.slice(0, 600),
      charts: [...document.querySelectorAll('.chart')].map((c) => [c.dataset.points, c.dataset.cohorts, !!c.querySelector('canvas')]),
      connection: document.querySelector('#connection')?.textContent,
    })).catch((e) => String(e));
    problems.push(`page ${n}: ${JSON.stringify(seen)}`);
    await page.screenshot({ path: join(shots, `failure-${n}.png`), fullPage: true }).catch(() => {});
  }
  fail(String(error?.stack || error).replaceAll('\n', ' | '));
} finally {
  await browser.close();
}
process.exit(0);
