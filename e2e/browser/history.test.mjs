// History and share links (issue 6): jobs survive a closed tab, the same key shows
// the same history on another browser profile, and a share link works for a
// stranger on a phone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, base, shots, sample, waitForEnd, noHorizontalScroll, DESKTOP, PHONE, visit, apiJob } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const key = () => Object.fromEntries((process.env.PARALLAX_TEST_KEYS ?? '').split(',').map((p) => p.split('=')))['history'];

async function withKey(context) {
  await context.addInitScript((k) => localStorage.setItem('parallax.key', k), key());
}

test('a job submitted before the tab closed finishes in history, and another profile sees it', async () => {
  // Profile 1: submit a slowish job, close the page while it runs.
  const one = await browser.newContext(DESKTOP);
  await withKey(one);
  let page = await one.newPage();
  await visit(page, base + '/');
  await page.getByTestId('control-image').setInputFiles(sample('rocket.jpg'));
  await page.getByText(/Will upload/).waitFor();
  const prompt = `history survives a closed tab ${Date.now()}`;
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('generate').click();
  const card = page.locator('[data-testid="job"][data-request-id]').first();
  await card.waitFor();
  const id = await card.getAttribute('data-request-id');
  await page.close();

  // Reopen the app in the same profile: the job is in history and finishes there.
  page = await one.newPage();
  await visit(page, base + '/history');
  const item = page.locator(`[data-testid="history-item"][data-request-id="${id}"]`);
  await item.waitFor();
  await item.getByTestId('history-status').filter({ hasText: 'COMPLETED' }).waitFor({ timeout: 60_000 });
  const thumb = item.getByTestId('history-thumb');
  await thumb.waitFor();
  assert.match(await thumb.getAttribute('src'), new RegExp(`/results/${id}/0\\.jpg$`));
  await page.screenshot({ path: path.join(shots, 'history-desktop.png'), fullPage: true });
  await one.close();

  // Profile 2, same key, empty storage: the server's list brings the job.
  const two = await browser.newContext(PHONE);
  await withKey(two);
  const other = await two.newPage();
  await visit(other, base + '/history');
  const same = other.locator(`[data-testid="history-item"][data-request-id="${id}"]`);
  await same.waitFor({ timeout: 20_000 });
  assert.match(await same.textContent(), /history survives a closed tab/);
  assert.equal(await noHorizontalScroll(other), true);
  await other.screenshot({ path: path.join(shots, 'history-phone.png'), fullPage: true });
  await two.close();
});

test('a share link opens for a stranger on a phone: the result, never the photo, and remix', async () => {
  // Make a result (anonymous).
  const maker = await browser.newContext(DESKTOP);
  const page = await maker.newPage();
  await visit(page, base + '/');
  await page.getByTestId('control-image').setInputFiles(sample('coffee.jpg'));
  await page.getByText(/Will upload/).waitFor();
  await page.getByTestId('prompt').fill('a coffee cup carved from jade');
  await page.getByTestId('generate').click();
  assert.equal(await waitForEnd(page), 'Done');
  const id = await page.locator('[data-testid="job"][data-request-id]').first().getAttribute('data-request-id');
  // Its owner compares it with the photo (through a signed link only they were given).
  const before = await page.locator('.compare-before').first().getAttribute('src');
  assert.match(before, new RegExp(`/results/${id}/control\\?exp=\\d+&sig=`));
  await maker.close();

  // A stranger (the same address here: an address is no owner) sees the result alone.
  const stranger = await browser.newContext(PHONE);
  const share = await stranger.newPage();
  const errors = [];
  share.on('pageerror', (e) => errors.push(String(e)));
  const resp = await visit(share, `${base}/r/${id}`);
  assert.equal(resp.status(), 200);
  assert.ok(!(await resp.text()).includes('/control'), 'no control image URL in the page');
  await share.getByTestId('share-prompt').filter({ hasText: 'jade' }).waitFor();
  const output = share.getByTestId('share-output').first();
  await output.waitFor();
  assert.match(await output.getAttribute('src'), new RegExp(`/results/${id}/0\\.`));
  assert.equal(await share.getByTestId('compare-range').count(), 0, 'no compare with the photo');
  assert.equal(await share.locator('img[src*="/control"]').count(), 0);
  assert.equal(await noHorizontalScroll(share), true);
  await share.screenshot({ path: path.join(shots, 'share-phone.png'), fullPage: true });

  // Remix brings the prompt and parameters; the photo stays its owner's.
  await share.getByTestId('share-remix').click();
  await share.waitForURL(/\?remix=/);
  await share.getByTestId('prompt').and(share.locator(':not(:placeholder-shown)')).waitFor();
  assert.equal(await share.getByTestId('prompt').inputValue(), 'a coffee cup carved from jade');
  assert.equal(await share.getByText(/Will upload/).count(), 0, 'no control image was loaded');
  assert.deepEqual(errors, []);
  await stranger.close();
});

test('its owner chooses to show the photo on the share page, and a stranger then compares', async () => {
  const maker = await browser.newContext(DESKTOP);
  const page = await maker.newPage();
  await visit(page, base + '/');
  await page.getByTestId('control-image').setInputFiles(sample('coffee.jpg'));
  await page.getByText(/Will upload/).waitFor();
  await page.getByTestId('prompt').fill('a teapot of green glass');
  await page.getByTestId('generate').click();
  assert.equal(await waitForEnd(page), 'Done');
  const id = await page.locator('[data-testid="job"][data-request-id]').first().getAttribute('data-request-id');
  const choice = page.getByTestId('job-share-control').first();
  assert.equal(await choice.inputValue(), 'none', 'not shared by default');

  const stranger = await browser.newContext(PHONE);
  const share = await stranger.newPage();
  await visit(share, `${base}/r/${id}`);
  await share.getByTestId('share-output').first().waitFor();
  assert.equal(await share.getByTestId('compare-range').count(), 0);

  // The owner chooses it: the server stores the choice, and the stranger's page compares.
  const stored = page.waitForResponse((r) => r.url().endsWith(`/v2/requests/${id}/share`) && r.status() === 200);
  await choice.selectOption('photo');
  await stored;
  await visit(share, `${base}/r/${id}`);
  await share.getByTestId('compare-range').first().waitFor();
  assert.match(await share.locator('.compare-before').first().getAttribute('src'), new RegExp(`/results/${id}/control\\?exp=`));
  await share.screenshot({ path: path.join(shots, 'share-photo-phone.png'), fullPage: true });
  await stranger.close();
  await maker.close();
});

test('jobs stored by the studio before results answered one output URL still show, and a running one finishes', async () => {
  // Two real jobs: one finished, one still queued when the "old" tab closed.
  const done = await apiJob('kept from before the upgrade');
  const running = await apiJob('running across the upgrade [sim:queue=4]', { wait: false });
  const job = (id, prompt, finished) => ({
    id, model: 'flux-depth-dev', prompt, status: finished ? 'COMPLETED' : 'QUEUED', has_result: finished,
    created_ms: Date.now() - 60_000, updated_ms: Date.now() - 50_000, finished_ms: finished ? Date.now() - 50_000 : null,
    // The store's shape as every studio so far wrote it: `outputs`, a list of URLs.
    outputs: finished ? [`${base}/results/${id}/0.jpg`] : [],
    control_image: finished ? `${base}/results/${id}/control` : null, expires_at: null, error: null,
    response_url: `${base}/v2/requests/${id}`, params: { prompt }, seed: null, metrics: {},
    expected_secs: finished ? null : 5,
  });
  const stored = JSON.stringify({ version: 2, jobs: [job(running, 'running across the upgrade', false), job(done, 'kept from before the upgrade', true)], removed: [] });
  const context = await browser.newContext(DESKTOP);
  await context.addInitScript((s) => { if (!localStorage.getItem('parallax.jobs')) localStorage.setItem('parallax.jobs', s); }, stored);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await visit(page, base + '/history');
  const loaded = async (img) => {
    await img.waitFor();
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
    return img.getAttribute('src');
  };
  const kept = page.locator(`[data-testid="history-item"][data-request-id="${done}"]`);
  assert.match(await loaded(kept.getByTestId('history-thumb')), new RegExp(`/results/${done}/0\\.jpg$`));
  const resumed = page.locator(`[data-testid="history-item"][data-request-id="${running}"]`);
  await resumed.getByTestId('history-status').filter({ hasText: 'COMPLETED' }).waitFor({ timeout: 60_000 });
  assert.match(await loaded(resumed.getByTestId('history-thumb')), new RegExp(`/results/${running}/0\\.jpg$`));

  await visit(page, base + '/');
  const card = page.locator(`[data-testid="job"][data-request-id="${done}"]`);
  assert.match(await loaded(card.getByTestId('job-output').first()), new RegExp(`/results/${done}/0\\.jpg$`));
  assert.deepEqual(errors, []);
  await context.close();
});

test('an unknown share link says so', async () => {
  const ctx = await browser.newContext(PHONE);
  const page = await ctx.newPage();
  const resp = await visit(page, `${base}/r/00000000-0000-4000-8000-000000000000`);
  assert.equal(resp.status(), 404);
  await page.getByTestId('load-error').waitFor();
  assert.match(await page.getByTestId('load-error').textContent(), /expired/);
  await ctx.close();
});
