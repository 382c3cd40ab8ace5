// Browser test of the playground in Debian's headless Chromium: pick an image, write a
// prompt, Generate, and watch QUEUED → PROCESSING → the image; then a job that fails.
// Needs the stack running (cargo xtask test starts it) at PARALLAX_BASE_URL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, base, shots, sample as samplePath, root, openPlayground as open } from './helpers.mjs';

const sample = samplePath('chelsea.jpg');
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const openPlayground = (viewport) => open(browser, { viewport });

test('a job travels from the form to a generated image', async () => {
  const { page, context, errors } = await openPlayground({ width: 1280, height: 860 });
  await page.getByTestId('control-image').setInputFiles(sample);
  await page.getByTestId('prompt').fill('a lighthouse on a cliff at dusk');
  await page.getByTestId('generate').click();

  const status = page.getByTestId('job-status').first();
  const seen = new Set();
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const s = (await status.textContent())?.trim();
    if (s) seen.add(s);
    if (s === 'Done' || s === 'Failed') break;
    await page.waitForTimeout(100);
  }
  assert.equal((await status.textContent()).trim(), 'Done', `statuses seen: ${[...seen]}`);
  assert.ok(seen.has('Queued') || seen.has('Generating…'), `statuses seen: ${[...seen]}`);

  const img = page.getByTestId('job-output').first();
  await img.waitFor();
  const src = await img.getAttribute('src');
  assert.match(src, /\/results\/[0-9a-f-]{36}\/0\.jpg$/);
  const size = await img.evaluate(async (el) => {
    if (!el.complete) await new Promise((r) => el.addEventListener('load', r, { once: true }));
    return [el.naturalWidth, el.naturalHeight];
  });
  assert.ok(size[0] > 100 && size[1] > 100, `decoded image size ${size}`);
  await page.screenshot({ path: path.join(shots, 'playground-desktop.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test('a failing job shows its reason, on a phone-sized screen', async () => {
  const { page, context, errors } = await openPlayground({ width: 390, height: 844 });
  await page.getByTestId('control-image').setInputFiles(sample);
  await page.getByTestId('prompt').fill('this one is blocked [sim:fail]');
  await page.getByTestId('generate').click();
  const err = page.getByTestId('job-error').first();
  await err.waitFor({ timeout: 60_000 });
  assert.match(await err.textContent(), /moderated/i);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scroll at 390 px');
  await page.screenshot({ path: path.join(shots, 'playground-phone-failed.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test('submitting without an image explains what is missing', async () => {
  const { page, context } = await openPlayground({ width: 1280, height: 860 });
  await page.getByTestId('prompt').fill('no image');
  await page.getByTestId('generate').click();
  await page.getByText('Choose a control image first.').waitFor();
  await context.close();
});

test('closing the browser mid-job does not stop the job', async () => {
  const { page, context } = await openPlayground({ width: 1280, height: 860 });
  await page.getByTestId('control-image').setInputFiles(path.join(root, 'public', 'samples', 'rocket.jpg'));
  await page.getByTestId('prompt').fill('a rocket made of glass');
  await page.getByTestId('generate').click();
  const card = page.locator('[data-testid="job"][data-request-id]').first();
  await card.waitFor();
  const id = await card.getAttribute('data-request-id');
  assert.match(id, /^[0-9a-f-]{36}$/);
  await context.close(); // every tab of this profile is gone now

  const deadline = Date.now() + 60_000;
  let res;
  do {
    await new Promise((r) => setTimeout(r, 500));
    res = await fetch(`${base}/results/${id}/0.jpg`);
  } while (res.status === 404 && Date.now() < deadline);
  assert.equal(res.status, 200, 'the job finished server-side and its image is in R2');
  assert.equal(res.headers.get('content-type'), 'image/jpeg');
  const bytes = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual([...bytes.slice(0, 3)], [0xff, 0xd8, 0xff]);
});
