// Credits in Settings (issue 28): with an access key, its balance and where its
// credits went — the grant, a finished job, a deleted one still listed — as
// `GET /v2/credits` says, on a desktop and a phone; without a key, today's allowance.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { launch, base, shots, sample, noHorizontalScroll, serverEnds, assertAccessible, DESKTOP, PHONE, visit } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const key = () => Object.fromEntries((process.env.PARALLAX_TEST_KEYS ?? '').split(',').map((p) => p.split('=')))['credits_ui'];

/// A job of the key, made through the API and waited until it ends.
async function keyedJob(prompt) {
  const form = new FormData();
  form.append('prompt', prompt);
  form.append('control_image', new Blob([readFileSync(sample('chelsea.jpg'))], { type: 'image/jpeg' }), 'chelsea.jpg');
  const resp = await fetch(`${base}/v2/flux-depth-dev`, { method: 'POST', body: form, headers: { 'x-api-key': key() } });
  assert.equal(resp.status, 200, await resp.clone().text());
  const { request_id: id } = await resp.json();
  await serverEnds(id);
  return id;
}

async function history() {
  const resp = await fetch(`${base}/v2/credits`, { headers: { 'x-api-key': key() } });
  assert.equal(resp.status, 200, await resp.clone().text());
  return resp.json();
}

async function openSettings(options, withKey) {
  const context = await browser.newContext(options);
  if (withKey) await context.addInitScript((k) => localStorage.setItem('parallax.key', k), key());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await visit(page, base + '/');
  await page.getByTestId('settings').click();
  await page.getByTestId('credits-panel').waitFor({ timeout: 60_000 });
  return { page, context, errors };
}

let made;
async function jobs() {
  // Once for both viewports: a finished job, and a deleted one.
  made ??= (async () => {
    const kept = await keyedJob(`credits panel kept ${Date.now()}`);
    const gone = await keyedJob(`credits panel deleted ${Date.now()}`);
    const del = await fetch(`${base}/v2/requests/${gone}`, { method: 'DELETE', headers: { 'x-api-key': key() } });
    assert.equal(del.status, 200, await del.clone().text());
    // Until both ends are recorded.
    for (let i = 0; i < 100; i++) {
      const h = await history();
      if (h.entries.every((e) => !e.pending)) return { kept, gone };
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('the jobs were never settled');
  })();
  return made;
}

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: Settings shows the key's balance and history, a deleted job included`, async () => {
    await jobs();
    const { balance, entries } = await history();
    const { page, context, errors } = await openSettings(options, true);
    await page.getByTestId('credits-balance').filter({ hasText: `Balance: ${balance} credits` }).waitFor();
    const shown = page.getByTestId('credits-entry');
    assert.equal(await shown.count(), entries.length, 'one line per entry (fewer than a page)');
    const texts = await shown.allTextContents();
    assert.ok(texts.some((t) => t.includes('Credits added') && t.includes('+1000')), texts.join('\n'));
    assert.ok(texts.some((t) => t.includes('FLUX.1 Depth [dev]') && t.includes('completed') && !t.includes('deleted')), texts.join('\n'));
    assert.ok(texts.some((t) => t.includes('deleted')), 'the deleted job is still listed');
    assert.equal(await page.getByTestId('credits-pending').count(), 0, 'nothing pending once settled');
    assert.ok(await noHorizontalScroll(page), 'no sideways scrolling');
    const box = await page.getByTestId('credits-panel').boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= options.viewport.width, `the panel is on screen: ${JSON.stringify(box)}`);
    await assertAccessible(page, `Settings with credits (${name})`);
    await page.screenshot({ path: path.join(shots, `credits-${name}.png`) });
    assert.deepEqual(errors, []);
    await context.close();
  });
}

test('desktop: without a key, Settings shows what is left of today\'s allowance', async () => {
  const { page, context, errors } = await openSettings(DESKTOP, false);
  await page.getByTestId('credits-balance').filter({ hasText: /\d+ credits left today/ }).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});
