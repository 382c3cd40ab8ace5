// The depth preview in the studio (issue 25): the depth map appears beside the picked
// image (a preview job, `POST /v2/depth-anything-v2`, against the real stack), an
// answer for an older pick never shows beside a newer image, a preview that fails or
// is still running never holds Generate back, "Use as control" makes the depth map the
// next job's control image with `control_type: depth`, results compare photo, depth and
// output (keyboard too), and the share page can show the depth map instead of the photo.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, base, shots, waitForEnd, noHorizontalScroll, assertAccessible, DESKTOP, PHONE, visit } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const PREVIEW = /\/v2\/depth-anything-v2$/;

/// Lets a held-back request go on; by then the page may have reloaded or closed, and
/// the request with it.
const letThrough = (route) => route.continue().catch(() => {});

/// The studio in a fresh profile, recording script errors and every preview submit's
/// answer (`request_id`s, in order).
async function open(options, withKey) {
  const context = await browser.newContext(options);
  if (withKey) await context.addInitScript((k) => localStorage.setItem('parallax.key', k), withKey);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy|Refused to/.test(m.text())) errors.push(m.text()); });
  const previews = [];
  page.on('response', async (r) => {
    if (r.request().method() === 'POST' && PREVIEW.test(new URL(r.url()).pathname) && r.status() === 200) {
      previews.push((await r.json()).request_id);
    }
  });
  await visit(page, base + '/');
  await page.getByTestId('generate').waitFor({ timeout: 60_000 });
  return { context, page, errors, previews };
}

/// Picks the sample photo `n` (0: the cat, 1: the coffee cup, …).
async function pickSample(page, n) {
  await page.getByTestId('sample').nth(n).click();
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
}

/// Waits until the depth map beside the control image has loaded; returns its URL.
async function depthShown(page, timeout = 60_000) {
  const img = page.getByTestId('depth-map');
  await img.waitFor({ timeout });
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid=depth-map]');
    return i && i.complete && i.naturalWidth > 0;
  }, null, { timeout });
  return img.getAttribute('src');
}

/// Whether the image `selector` shows is greyscale, its size and its range of grey
/// levels (read from the element: the page's CSP lets no script fetch a blob: URL).
async function greyscale(page, selector) {
  return page.evaluate(async (sel) => {
    const bmp = await createImageBitmap(document.querySelector(sel));
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    const d = g.getImageData(0, 0, bmp.width, bmp.height).data;
    let grey = true;
    let lo = 255;
    let hi = 0;
    for (let i = 0; i < d.length; i += 4 * 97) {
      if (Math.abs(d[i] - d[i + 1]) > 2 || Math.abs(d[i + 1] - d[i + 2]) > 2) grey = false;
      lo = Math.min(lo, d[i]);
      hi = Math.max(hi, d[i]);
    }
    return { grey, width: bmp.width, height: bmp.height, range: hi - lo };
  }, selector);
}

/// Submits the form with `prompt`; returns the new card and its request id.
async function generate(page, prompt) {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('generate').click();
  const card = page.locator('[data-testid="job"][data-request-id]').filter({ hasText: prompt }).first();
  await card.waitFor();
  return { card, id: await card.getAttribute('data-request-id') };
}

const shot = (page, name) => page.screenshot({ path: path.join(shots, `depth-${name}.png`), fullPage: true });

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: the depth map appears beside the picked image, a spinner meanwhile`, async () => {
    const { context, page, errors, previews } = await open(options);
    // Hold the preview's submit a moment, so the spinner is certainly seen.
    let release;
    const held = new Promise((r) => { release = r; });
    await page.route(PREVIEW, async (route) => { await held; await letThrough(route); });
    await page.getByTestId('sample').nth(0).click();
    await page.getByTestId('depth-computing').waitFor();
    await assertAccessible(page, `the studio computing a depth map (${name})`);
    await shot(page, `computing-${name}`);
    release();
    const src = await depthShown(page);
    assert.equal(previews.length, 1, 'one preview job');
    assert.match(src, new RegExp(previews[0]), 'the depth map is that preview job\'s output');
    const map = await greyscale(page, '[data-testid=depth-map]');
    assert.ok(map.grey, 'a greyscale map');
    assert.ok(map.range > 20, `with depth in it (grey levels span ${map.range})`);
    await shot(page, `shown-${name}`);
    // Beside the image: side by side, not below it.
    const photo = await page.locator('.drop .preview').boundingBox();
    const depth = await page.getByTestId('depth-map').boundingBox();
    assert.ok(Math.abs(photo.y - depth.y) < photo.height / 2 && depth.x > photo.x,
      `beside the photo: ${JSON.stringify({ photo, depth })}`);
    const download = page.getByTestId('depth-download');
    assert.equal(await download.getAttribute('href'), src);
    assert.match(await download.getAttribute('download'), /\.png$/);
    assert.equal(await page.getByTestId('control-is-depth').isChecked(), false);
    assert.equal(await noHorizontalScroll(page), true);
    await assertAccessible(page, `the studio with a depth map (${name})`);
    assert.deepEqual(errors, []);
    await context.close();
  });
}

test('desktop: an answer for an older pick never shows beside a newer image', async () => {
  const { context, page, errors, previews } = await open(DESKTOP);
  // The first pick's preview answer is held back until the second pick's depth shows.
  let release;
  const held = new Promise((r) => { release = r; });
  let first = true;
  await page.route(PREVIEW, async (route) => {
    if (first) { first = false; await held; }
    await letThrough(route);
  });
  await page.getByTestId('sample').nth(0).click();
  await page.getByTestId('depth-computing').waitFor();
  await pickSample(page, 1);
  const second = await depthShown(page);
  release();
  // The older preview now completes on the server; the page keeps the newer one.
  const deadline = Date.now() + 30_000;
  while (previews.length < 2 && Date.now() < deadline) await page.waitForTimeout(100);
  assert.equal(previews.length, 2, 'both previews were submitted');
  const [older, newer] = [previews.find((id) => !second.includes(id)), previews.find((id) => second.includes(id))];
  assert.ok(older && newer, `the shown map is one preview's (${second})`);
  for (let i = 0; i < 100; i++) {
    const s = (await (await fetch(`${base}/v2/requests/${older}/status`)).json()).status;
    if (s === 'COMPLETED' || s === 'FAILED') break;
    await page.waitForTimeout(200);
  }
  await page.waitForTimeout(1_500);
  assert.equal(await page.getByTestId('depth-map').getAttribute('src'), second, 'still the newer image\'s map');
  assert.equal(await page.getByTestId('depth-map').count(), 1);
  assert.deepEqual(errors, []);
  await context.close();
});

test('phone: an image picked again shows its depth map at once, with no second preview job', async () => {
  const { context, page, errors, previews } = await open(PHONE);
  const sent = [];
  page.on('request', (r) => { if (r.method() === 'POST' && PREVIEW.test(new URL(r.url()).pathname)) sent.push(r.url()); });
  await pickSample(page, 0);
  const first = await depthShown(page);
  await pickSample(page, 1);
  const second = await depthShown(page);
  assert.notEqual(first, second);
  await pickSample(page, 0);
  assert.equal(await depthShown(page), first, 'the first image\'s map again');
  assert.equal(sent.length, 2, `previews sent: ${sent.length}`);
  assert.equal(previews.length, 2);
  assert.deepEqual(errors, []);
  await context.close();
});

test('phone: a preview that cannot be computed leaves the image alone with a reason, and Generate works', async () => {
  const { context, page, errors } = await open(PHONE);
  // Every preview submit is lost on the way (the network drops it).
  await page.route(PREVIEW, (route) => route.abort('internetdisconnected'));
  await pickSample(page, 2);
  const reason = page.getByTestId('depth-unavailable');
  await reason.waitFor({ timeout: 30_000 });
  assert.match(await reason.textContent(), /No depth preview/);
  await assertAccessible(page, 'the studio without a depth map (phone)');
  await shot(page, 'unavailable-phone');
  const { card } = await generate(page, 'a rocket of paper, no depth preview');
  assert.equal(await waitForEnd(page), 'Done');
  await card.getByTestId('job-output').first().waitFor();
  assert.equal(await noHorizontalScroll(page), true);
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: Generate never waits for the preview, and a reload mid-preview shows it again', async () => {
  const { context, page, errors } = await open(DESKTOP);
  let release;
  const held = new Promise((r) => { release = r; });
  await page.route(PREVIEW, async (route) => { await held; await letThrough(route); });
  await pickSample(page, 3);
  await page.getByTestId('depth-computing').waitFor();
  const { id } = await generate(page, 'an astronaut in marble, preview still computing');
  assert.ok(id, 'the job was submitted while the depth map was computing');
  assert.equal(await waitForEnd(page), 'Done');
  assert.equal(await page.getByTestId('depth-computing').count(), 1, 'the preview was still computing');
  // Reload while it computes: the sample comes back, and so does its depth map.
  await page.reload({ waitUntil: 'domcontentloaded' });
  release();
  await page.unrouteAll();
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor({ timeout: 30_000 });
  await depthShown(page);
  assert.deepEqual(errors, []);
  await context.close();
});

/// A stranger remixes the depth job `id`: its depth map is not theirs, so their own
/// photo stays a photo (`control_type: image`), previewed.
async function strangerRemixes(id) {
  const { context, page, errors } = await open(DESKTOP);
  await pickSample(page, 2);
  const before = await depthShown(page);
  // The studio's own navigation to `/?remix=` (as from a share page's Remix).
  await page.evaluate((rid) => {
    history.pushState(null, '', `/?remix=${rid}`);
    dispatchEvent(new PopStateEvent('popstate'));
  }, id);
  await page.getByTestId('prompt').and(page.locator(':not(:placeholder-shown)')).waitFor();
  assert.match(await page.getByTestId('prompt').inputValue(), /coffee cup of jade/);
  assert.equal(await page.getByTestId('control-is-depth').isChecked(), false, 'the stranger\'s photo is a photo');
  assert.equal(await depthShown(page), before, 'its preview stays beside it');
  assert.deepEqual(errors, []);
  await context.close();
}

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: "Use as control" makes the depth map the next control image with control_type depth`, async () => {
    const { context, page, errors } = await open(options);
    await pickSample(page, 1);
    const src = await depthShown(page);
    const photo = await page.locator('.drop .preview').getAttribute('src');
    await page.getByTestId('depth-use').click();
    const toggle = page.getByTestId('control-is-depth');
    // Marked as a depth map once it is the control image, not before.
    await page.waitForFunction(() => document.querySelector('[data-testid=control-is-depth]')?.checked);
    // The depth map becomes the control image (fetched and prepared like any image);
    // no preview of a depth map: the image alone.
    await page.waitForFunction((old) => {
      const img = document.querySelector('.drop .preview');
      return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0;
    }, photo);
    await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
    await page.getByTestId('depth').waitFor({ state: 'detached' });
    assert.ok((await greyscale(page, '.drop .preview')).grey, 'the control image is now the (greyscale) depth map');
    await shot(page, `use-as-control-${name}`);
    const { card, id } = await generate(page, `a coffee cup of jade, from its depth map (${name})`);
    assert.equal(await waitForEnd(page), 'Done');
    await card.getByTestId('job-output').first().waitFor();
    const result = await (await fetch(`${base}/v2/requests/${id}`)).json();
    assert.equal(result.params.control_type, 'depth', 'sent as a depth map');
    assert.ok(src, 'from the preview');
    if (name === 'desktop') await strangerRemixes(id);
    // Its owner's Remix brings the depth map back, marked a depth map once it is the
    // control image.
    await card.getByTestId('job-remix').click();
    await page.waitForFunction(() => document.querySelector('[data-testid=control-is-depth]')?.checked);
    await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
    assert.ok((await greyscale(page, '.drop .preview')).grey, 'the depth map is the control image again');
    // A new pick is a photo again, and is previewed.
    await pickSample(page, 0);
    assert.equal(await toggle.isChecked(), false, 'a new pick is a photo again');
    await depthShown(page);
    // Ticked by hand, it stays through a new pick (an edited depth map uploaded).
    await toggle.check();
    await page.getByTestId('depth').waitFor({ state: 'detached' });
    await pickSample(page, 2);
    assert.equal(await toggle.isChecked(), true);
    assert.equal(await page.getByTestId('depth').count(), 0, 'no preview of a depth map');
    assert.equal(await noHorizontalScroll(page), true);
    assert.deepEqual(errors, []);
    await context.close();
  });
}

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: a result compares photo, depth and output, with the keyboard too`, async () => {
    const { context, page, errors } = await open(options);
    await pickSample(page, 0);
    const depth = await depthShown(page);
    const { card } = await generate(page, `a cat of blown glass, three ways (${name})`);
    assert.equal(await waitForEnd(page), 'Done');
    const layers = card.getByTestId('compare-layers');
    await layers.waitFor();
    assert.equal(await layers.getByRole('radio').count(), 3);
    const before = card.locator('.compare-before');
    assert.match(await before.getAttribute('src'), /\/control/, 'photo vs result first');
    // Keyboard: focus the checked choice, arrow to the next pair, Tab to the slider.
    await card.getByTestId('layers-photo-result').focus();
    await page.keyboard.press('ArrowRight');
    assert.equal(await card.getByTestId('layers-depth-result').isChecked(), true);
    await page.waitForFunction((d) => document.querySelector('[data-testid=job] .compare-before')?.getAttribute('src') === d, depth);
    assert.equal(await card.locator('.compare-range').getAttribute('aria-label'), 'Compare with the depth map');
    await page.keyboard.press('ArrowRight');
    assert.equal(await card.getByTestId('layers-photo-depth').isChecked(), true);
    assert.equal(await card.getByTestId('compare-depth').getAttribute('src'), depth);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'compare-range');
    await page.keyboard.press('End');
    assert.equal(await card.getByTestId('compare-range').inputValue(), '100');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('ArrowLeft');
    assert.equal(await card.getByTestId('layers-depth-result').isChecked(), true);
    assert.equal(await card.getByTestId('compare-range').inputValue(), '100', 'the slider keeps its place');
    await card.scrollIntoViewIfNeeded();
    await assertAccessible(page, `a result with the three-way compare (${name})`);
    assert.equal(await noHorizontalScroll(page), true);
    await shot(page, `compare-${name}`);
    assert.deepEqual(errors, []);
    await context.close();
  });
}

/// A key of the test stack (`PARALLAX_TEST_KEYS`): the API keeps a keyed account's
/// previews by image hash, and so knows a job's depth map.
const key = () => Object.fromEntries((process.env.PARALLAX_TEST_KEYS ?? '').split(',').map((p) => p.split('=')))['rich'];

test('the owner shows the depth map instead of the photo on the share page', async () => {
  const { context, page, errors } = await open(DESKTOP, key());
  await pickSample(page, 3);
  const depth = await depthShown(page);
  const { card, id } = await generate(page, 'an astronaut carved in wood, shared by depth');
  assert.equal(await waitForEnd(page), 'Done');
  await card.getByTestId('job-output').first().waitFor();
  const choice = card.getByTestId('job-share-control');
  assert.equal(await choice.inputValue(), 'none', 'nothing beside the result by default');

  const stranger = await browser.newContext(PHONE);
  const share = await stranger.newPage();
  const seen = [];
  share.on('request', (r) => seen.push(r.url()));
  const stored = page.waitForResponse((r) => r.url().endsWith(`/v2/requests/${id}/share`) && r.status() === 200);
  await choice.selectOption('depth');
  await stored;
  await visit(share, `${base}/r/${id}`);
  await share.getByTestId('compare-range').first().waitFor();
  const before = await share.locator('.compare-before').first().getAttribute('src');
  // The job's own copy of the map the studio showed (never the preview's URL).
  assert.equal(new URL(before).pathname, `/results/${id}/depth.png`, 'the depth map, beside the result');
  assert.notEqual(new URL(depth, base).pathname, `/results/${id}/depth.png`, 'the studio showed the preview\'s');
  assert.equal(await share.getByTestId('compare-layers').count(), 0, 'no photo to choose');
  assert.equal(await share.locator('.compare-range').getAttribute('aria-label'), 'Compare with the depth map');
  assert.ok(!seen.some((u) => /\/control/.test(u)), 'the photo is never fetched');
  assert.ok(!(await share.content()).includes(`/results/${id}/control`), 'nor linked');
  await assertAccessible(share, 'the share page with the depth map (phone)');
  assert.equal(await noHorizontalScroll(share), true);
  await share.screenshot({ path: path.join(shots, 'depth-share-phone.png'), fullPage: true });

  // With the photo too, the page compares all three.
  const again = page.waitForResponse((r) => r.url().endsWith(`/v2/requests/${id}/share`) && r.status() === 200);
  await choice.selectOption('photo');
  await again;
  await visit(share, `${base}/r/${id}`);
  await share.getByTestId('compare-layers').waitFor();
  assert.equal(await share.getByTestId('compare-layers').getByRole('radio').count(), 3);
  await assertAccessible(share, 'the share page with photo and depth (phone)');
  await share.screenshot({ path: path.join(shots, 'depth-share-photo-phone.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await stranger.close();
  await context.close();
});

test('desktop: a depth map that cannot be fetched for "Use as control" leaves the photo, sent as a photo', async () => {
  const { context, page, errors } = await open(DESKTOP);
  await pickSample(page, 1);
  const src = await depthShown(page);
  const photo = await page.locator('.drop .preview').getAttribute('src');
  // The depth map's fetch (to become the control image) fails.
  await page.route((u) => u.href === new URL(src, base).href, (route) => route.abort('internetdisconnected'));
  await page.getByTestId('depth-use').click();
  await page.getByTestId('image-error').filter({ hasText: /depth map/ }).waitFor();
  assert.match(await page.getByTestId('image-error').textContent(), /the photo stays, sent as a photo/);
  assert.equal(await page.getByTestId('control-is-depth').isChecked(), false, 'not marked as a depth map');
  assert.equal(await page.locator('.drop .preview').getAttribute('src'), photo, 'the photo is still the control image');
  const { id } = await generate(page, 'a coffee cup of jade, the depth map never came');
  assert.equal(await waitForEnd(page), 'Done');
  const result = await (await fetch(`${base}/v2/requests/${id}`)).json();
  assert.equal(result.params.control_type, 'image', 'sent as a photo');
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a preview refused with 502 or 402 reads as a short reason, and Generate stays', async () => {
  const { context, page, errors } = await open(DESKTOP);
  const refuse = (status, code, error) => page.route(PREVIEW, (route) => route.fulfill({
    status, contentType: 'application/json', body: JSON.stringify({ error, code }),
  }));
  await refuse(502, 'upstream_failed', 'no provider is configured for depth-anything-v2 (a raw server line)');
  await pickSample(page, 0);
  const reason = page.getByTestId('depth-unavailable');
  await reason.waitFor({ timeout: 30_000 });
  assert.equal(await reason.textContent(), 'No depth preview: no provider here can compute depth maps.');
  await page.unrouteAll();
  await refuse(402, 'insufficient_credits', 'Insufficient credits: 0 left (a raw server line)');
  await pickSample(page, 1);
  await reason.filter({ hasText: 'credits' }).waitFor({ timeout: 30_000 });
  assert.equal(await reason.textContent(), 'No depth preview: not enough credits.');
  assert.equal(await page.getByTestId('generate').isEnabled(), true, 'Generate is not held back');
  assert.equal(await page.locator('.drop .preview').count(), 1, 'the photo alone');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the preview model is never the studio\'s: /?model=depth-anything-v2 checks a generator', async () => {
  const context = await browser.newContext(DESKTOP);
  const page = await context.newPage();
  await visit(page, base + '/?model=depth-anything-v2');
  await page.getByTestId('generate').waitFor({ timeout: 60_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('input[name=model]')].some((r) => r.checked));
  assert.equal(await page.getByTestId('model-flux-depth-pro').isChecked(), true, 'the default model');
  await context.close();
});
