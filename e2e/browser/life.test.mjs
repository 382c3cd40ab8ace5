// The studio in real life (issue 16): coming back to every page in the same profile,
// moving between pages, reloading mid-job, status reads failing (503, offline) for
// seconds, a second tab, a cancel racing the end of the job, typing decimals, Enter in
// the URL field, one job per key press, and axe-core on every page, light and dark.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, base, shots, sample, waitForEnd, noHorizontalScroll, assertAccessible, apiJob, serverEnds, DESKTOP, PHONE, visit } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/// Status reads, plain or held (`…/status?wait=25&seen=…`: a glob would miss the query).
const statusReads = (url) => /^\/v2\/requests\/[^/]+\/status$/.test(url.pathname);

/// A page that records what a user would see go wrong: script errors and CSP blocks.
async function open(context, url = base + '/') {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy|Refused to/.test(m.text())) errors.push(m.text()); });
  if (url) await visit(page, url);
  return { page, errors };
}

/// The app rendered (not a blank page): the header's navigation is there.
async function rendered(page) {
  await page.getByTestId('nav-history').waitFor({ timeout: 15_000 });
}

/// Picks the first sample photo (one tap) and waits until it is ready to upload.
async function pickSample(page) {
  await page.getByTestId('sample').first().click();
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
}

/// Submits a job from the studio and returns its card once it has a request id.
async function submit(page, prompt) {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('generate').click();
  const card = page.locator(`[data-testid="job"][data-request-id]`).filter({ hasText: prompt }).first();
  await card.waitFor();
  return { card, id: await card.getAttribute('data-request-id') };
}

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  for (const scheme of ['light', 'dark']) {
    test(`${name} ${scheme}: every page, visited twice in one profile, renders and passes axe-core`, async () => {
      const id = await apiJob(`a shared page for the ${name} ${scheme} visit`);
      const context = await browser.newContext({ ...options, colorScheme: scheme });
      const { page, errors } = await open(context, null);
      for (const url of ['/', '/history', `/r/${id}`, '/no/such/page']) {
        for (let n = 1; n <= 2; n++) {
          const resp = await visit(page, base + url);
          assert.ok([200, 304].includes(resp.status()), `${url} visit ${n}: ${resp.status()}`);
          await rendered(page);
        }
        await page.reload({ waitUntil: 'domcontentloaded' });
        await rendered(page);
        // The page itself, not only the shell.
        if (url.startsWith('/r/')) await page.getByTestId('share-prompt').waitFor();
        else if (url === '/history') await page.getByRole('heading', { name: 'History' }).waitFor();
        else await page.getByTestId('generate').waitFor();
        await assertAccessible(page, `${url} (${name}, ${scheme})`);
        assert.equal(await noHorizontalScroll(page), true, `${url}: no horizontal scroll`);
        await page.screenshot({ path: path.join(shots, `life-${name}-${scheme}${url.replaceAll('/', '_') || '_'}.png`), fullPage: true });
      }
      assert.deepEqual(errors, []);
      await context.close();
    });
  }
}

test('desktop: Studio → History → Studio keeps the jobs and the form, without reloading', async () => {
  const context = await browser.newContext(DESKTOP);
  const { page, errors } = await open(context);
  await pickSample(page);
  const { card, id } = await submit(page, 'a cat of blown glass');
  assert.equal(await waitForEnd(page), 'Done');
  await card.getByTestId('job-facts').filter({ hasText: 'Seed' }).waitFor();
  assert.match(await card.getByTestId('job-facts').textContent(), /Credits/);
  await assertAccessible(page, 'the studio with a finished job');
  await page.screenshot({ path: path.join(shots, 'life-studio-done-desktop.png'), fullPage: true });
  await page.getByTestId('prompt').fill('still here after History');
  await page.evaluate(() => { window.__sameDocument = true; });

  await page.getByTestId('nav-history').click();
  await page.waitForURL(/\/history$/);
  await page.locator(`[data-testid="history-item"][data-request-id="${id}"]`).waitFor();
  await assertAccessible(page, 'History with a job');
  await page.getByRole('link', { name: 'Studio' }).click();
  await page.waitForURL((u) => u.pathname === '/');
  await page.locator(`[data-testid="job"][data-request-id="${id}"]`).getByTestId('job-output').first().waitFor();
  assert.equal(await page.getByTestId('prompt').inputValue(), 'still here after History');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'navigation did not reload the page');

  // The card links to the job's share page, and downloads are named after prompt and seed.
  const download = await card.getByTestId('job-download').first().getAttribute('download');
  assert.match(download, /^a-cat-of-blown-glass-seed-\d+-1\.jpg$/);
  await card.getByTestId('job-page').click();
  await page.waitForURL(new RegExp(`/r/${id}$`));
  await page.getByTestId('share-prompt').filter({ hasText: 'blown glass' }).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});

test('phone: the new job scrolls into view, and a reload mid-job resumes it to the end', async () => {
  const context = await browser.newContext(PHONE);
  const { page, errors } = await open(context);
  await pickSample(page);
  const { card, id } = await submit(page, 'a slow one to reload [sim:process=4]');
  const inView = await card.evaluate((el) => { const r = el.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
  assert.ok(inView, 'the new card is on screen after tapping Generate');
  await page.reload({ waitUntil: 'domcontentloaded' });
  const again = page.locator(`[data-testid="job"][data-request-id="${id}"]`);
  await again.waitFor();
  assert.equal(await waitForEnd(page), 'Done');
  await again.getByTestId('job-output').first().waitFor();
  await page.screenshot({ path: path.join(shots, 'life-studio-done-phone.png'), fullPage: true });

  // A link to the job (`/?job=`) opens the studio scrolled to it, on a fresh load too
  // (the jobs are read in from storage after the page appears).
  await visit(page, `${base}/?job=${id}`);
  await again.waitFor();
  const onScreen = () => again.evaluate((el) => { const r = el.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
  let shown = await onScreen();
  for (let i = 0; !shown && i < 50; i++) { await page.waitForTimeout(100); shown = await onScreen(); }
  assert.ok(shown, 'the linked job is on screen');
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: status reads failing (503, then offline) for seconds; the job still ends Done', async () => {
  const context = await browser.newContext(DESKTOP);
  const { page, errors } = await open(context);
  const seen = new Set();
  await pickSample(page);
  // Every status and result read answers 503 until the server has finished the job.
  const fail = (route) => route.fulfill({ status: 503, contentType: 'text/html', body: '<h1>503</h1>', headers: { 'retry-after': '1' } });
  await page.route(statusReads, fail);
  await page.route('**/v2/requests/*', (route) => (route.request().method() === 'GET' ? fail(route) : route.continue()));
  const { card, id } = await submit(page, 'through the outage [sim:process=2]');
  await card.getByTestId('job-lost').waitFor();
  seen.add((await card.getByTestId('job-status').textContent()).trim());
  assert.equal(await serverEnds(id), 'COMPLETED');
  await page.waitForTimeout(3_000); // the outage goes on after the job ended
  seen.add((await card.getByTestId('job-status').textContent()).trim());
  await page.unrouteAll();
  await context.setOffline(true);
  await page.waitForTimeout(3_000);
  seen.add((await card.getByTestId('job-status').textContent()).trim());
  await context.setOffline(false);
  assert.equal(await waitForEnd(page), 'Done');
  assert.ok(!seen.has('Failed'), `never shown as failed: ${[...seen]}`);
  await card.getByTestId('job-lost').waitFor({ state: 'detached' });
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a job submitted in a second tab shows in the first tab\'s History', async () => {
  const context = await browser.newContext(DESKTOP);
  const { page: first, errors } = await open(context, base + '/history');
  await rendered(first);
  const { page: second } = await open(context);
  await pickSample(second);
  const { id } = await submit(second, 'made in the other tab');
  const item = first.locator(`[data-testid="history-item"][data-request-id="${id}"]`);
  await item.waitFor();
  await item.getByTestId('history-status').filter({ hasText: 'COMPLETED' }).waitFor({ timeout: 60_000 });
  // And History writing its state back must not drop a job the other tab adds later.
  const { id: later } = await submit(second, 'and another one');
  await first.locator(`[data-testid="history-item"][data-request-id="${later}"]`).waitFor();
  await second.reload({ waitUntil: 'domcontentloaded' });
  await second.locator(`[data-testid="job"][data-request-id="${id}"]`).waitFor();
  await second.locator(`[data-testid="job"][data-request-id="${later}"]`).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a cancel clicked while the tab still shows "running" after the server finished keeps the result', async () => {
  const context = await browser.newContext(DESKTOP);
  const { page, errors } = await open(context);
  await pickSample(page);
  // Status reads hang back (503), so the card still says it is running…
  const fail = (route) => route.fulfill({ status: 503, body: '' });
  await page.route(statusReads, fail);
  await page.route('**/v2/requests/*', (route) => (route.request().method() === 'GET' ? fail(route) : route.continue()));
  const { card, id } = await submit(page, 'finished before the cancel [sim:process=1]');
  // …while the server has already finished it.
  assert.equal(await serverEnds(id), 'COMPLETED');
  const deletes = [];
  page.on('request', (r) => { if (r.method() === 'DELETE') deletes.push(r.url()); });
  const cancel = card.getByTestId('job-cancel');
  await cancel.click();
  // The server refuses (409: it already finished); the card says so once it can read.
  await page.unrouteAll();
  await card.getByTestId('job-notice').filter({ hasText: /already finished/ }).waitFor({ timeout: 20_000 });
  assert.equal(await waitForEnd(page), 'Done');
  await card.getByTestId('job-output').first().waitFor();
  assert.deepEqual(deletes, [], 'Cancel never deletes');
  const result = await (await fetch(`${base}/v2/requests/${id}`)).json();
  assert.equal(result.status, 'COMPLETED');
  assert.equal(result.images.length, 1, 'the result is intact on the server');
  assert.equal(result.output, result.images[0].url);
  assert.deepEqual(errors, []);
  await context.close();
});

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: decimals type naturally, Enter in the URL field uses it, one job per key press`, async () => {
    const context = await browser.newContext(options);
    const { page, errors } = await open(context);
    const posts = [];
    // Jobs submitted (a picked image's depth preview is not one).
    page.on('request', (r) => {
      const p = new URL(r.url()).pathname;
      if (r.method() === 'POST' && p.startsWith('/v2/') && p !== '/v2/depth-anything-v2') posts.push(r.url());
    });

    const guidance = page.locator('#param-guidance');
    await guidance.fill('');
    await guidance.pressSequentially('7.5');
    assert.equal(await guidance.inputValue(), '7.5');
    await page.locator('#param-guidance-error').filter({ hasText: /\S/ }).waitFor({ state: 'detached' }).catch(() => {});
    assert.equal((await page.locator('#param-guidance-error').textContent()).trim(), '');

    await page.getByTestId('prompt').fill('enter must not submit');
    await page.locator('#control-url').fill('https://images.example/photo.jpg');
    await page.locator('#control-url').press('Enter');
    await page.getByText('The server will fetch this URL.').waitFor();
    assert.equal(await page.locator('.preview').getAttribute('src'), 'https://images.example/photo.jpg');
    assert.deepEqual(posts, [], 'Enter in the URL field submitted nothing');

    if (name === 'desktop') {
      await pickSample(page);
      await page.getByTestId('prompt').fill('held ctrl+enter');
      await page.getByTestId('prompt').focus();
      await page.keyboard.down('Control');
      for (let i = 0; i < 4; i++) await page.keyboard.down('Enter'); // auto-repeat
      await page.keyboard.up('Enter');
      await page.keyboard.up('Control');
      await page.locator('[data-testid="job"][data-request-id]').first().waitFor();
      assert.equal(await waitForEnd(page), 'Done');
      assert.equal(posts.length, 1, `one job per key press, got ${posts.length}`);

      // The file picker shows keyboard focus on its visible label.
      const input = page.getByTestId('control-image');
      await input.focus();
      await page.keyboard.press('Shift+Tab');
      await page.keyboard.press('Tab');
      const outline = await input.evaluate((el) => getComputedStyle(el.closest('label')).outlineStyle);
      assert.notEqual(outline, 'none', 'focus is visible on "Choose image"');
    }
    assert.deepEqual(errors.filter((e) => !/images\.example/.test(e)), []);
    await context.close();
  });
}

for (const [name, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: the form survives a reload (prompt, parameters, the picked sample), the URL's model still wins`, async () => {
    const context = await browser.newContext(options);
    const { page, errors } = await open(context);
    await pickSample(page);
    await page.getByTestId('prompt').fill('a lighthouse made of coral');
    const guidance = page.locator('#param-guidance');
    await guidance.fill('');
    await guidance.pressSequentially('12.5');

    await page.reload({ waitUntil: 'domcontentloaded' });
    await rendered(page);
    assert.equal(await page.getByTestId('prompt').inputValue(), 'a lighthouse made of coral');
    assert.equal(await page.locator('#param-guidance').inputValue(), '12.5');
    // The sample is fetched and prepared again (its bytes were not stored).
    await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
    assert.match(await page.locator('.preview').getAttribute('src'), /^blob:/);
    await page.screenshot({ path: path.join(shots, `life-form-reloaded-${name}.png`), fullPage: true });

    // A link naming another model switches to it, keeping what both models share.
    await visit(page, base + '/?model=flux-depth-dev');
    await rendered(page);
    assert.equal(await page.getByTestId('model-flux-depth-dev').isChecked(), true);
    assert.equal(await page.getByTestId('prompt').inputValue(), 'a lighthouse made of coral');
    assert.equal(await page.locator('#param-guidance').inputValue(), '12.5');
    await page.reload({ waitUntil: 'domcontentloaded' });
    await rendered(page);
    assert.equal(await page.getByTestId('model-flux-depth-dev').isChecked(), true);
    assert.equal(await page.getByTestId('prompt').inputValue(), 'a lighthouse made of coral');
    assert.deepEqual(errors, []);
    await context.close();
  });
}

test('desktop: when the app\'s wasm cannot be downloaded, the page says so, and Reload brings the app', async () => {
  // The bootstrap script (`Trunk.toml`'s `pattern_script`) shows `index.html`'s
  // notice when the app's code cannot be fetched or started, instead of a blank page.
  const context = await browser.newContext(DESKTOP);
  let blocked = 0;
  await context.route(/\/parallax-app-[0-9a-f]+_bg\.wasm$/, (route) => { blocked++; return route.abort('internetdisconnected'); });
  const { page, errors } = await open(context, base + '/history');
  const notice = page.getByTestId('boot-error');
  await notice.waitFor();
  assert.ok(blocked >= 1, 'the wasm was asked for');
  assert.match(await notice.textContent(), /could not be loaded/);
  await assertAccessible(page, 'the boot-error notice');
  await page.screenshot({ path: path.join(shots, 'life-boot-error-desktop.png'), fullPage: true });
  await context.unroute(/\/parallax-app-[0-9a-f]+_bg\.wasm$/);
  await notice.getByRole('button', { name: 'Reload' }).click();
  await page.getByRole('heading', { name: 'History' }).waitFor();
  assert.equal(await page.getByTestId('boot-error').isVisible(), false);
  assert.equal(new URL(page.url()).pathname, '/history');
  assert.deepEqual(errors, []);
  await context.close();
});

for (const [name, device] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`${name}: index.html's static first view is laid out as the app's, and gives way to it`, async () => {
    // What paints before the wasm has arrived (the app shell in `app/index.html`) must
    // sit where the app then draws the same things: the wasm is held back, the shell
    // measured, the wasm let through, the app measured.
    const context = await browser.newContext(device);
    let release;
    const held = new Promise((r) => { release = r; });
    await context.route(/\/parallax-app-[0-9a-f]+_bg\.wasm$/, async (route) => { await held; await route.continue(); });
    const { page, errors } = await open(context);
    await page.locator('#shell .drop-hint').waitFor();
    // Header parts: where they stand (their widths follow the credits shown later);
    // the studio's: where, how large, and what they say.
    const header = ['.top', '.brand', '.tagline', '.nav', '.settings'];
    const studio = ['.models', '.hint', '.image-input .field-label', '.drop', '.drop-hint', '.pick-row', '.url-row', '.samples', 'textarea', 'textarea + .help', '.generate-bar', '.results .empty', '.snippets'];
    const boxes = (scope) => page.evaluate(([scope, header, studio]) => {
      const box = (sel, all) => {
        const el = document.querySelector(`${scope} ${sel}`);
        if (!el) return { text: `${sel}: missing`, top: 0 };
        const r = el.getBoundingClientRect();
        // The words (the shell's markup has line breaks between elements, the app's none).
        const said = all ? ` "${el.textContent.replace(/\s+/g, '')}"` : '';
        return { text: `${sel}: ${(all ? [r.left, r.top, r.width, r.height] : [r.top, r.height]).map(Math.round)}${said}`, top: r.top };
      };
      return [...header.map((s) => box(s, false)), ...studio.map((s) => box(s, true))];
    }, [scope, header, studio]);
    const shell = await boxes('#shell');
    await page.screenshot({ path: path.join(shots, `life-shell-${name}.png`) });
    release();
    await page.getByTestId('drop-zone').waitFor({ timeout: 60_000 });
    assert.equal(await page.locator('#shell').count(), 0, 'the shell is gone once the app is up');
    const app = await boxes('body');
    // What either shows in the first screenful (below it the shell has no more form).
    const height = device.viewport.height;
    const seen = (list) => list.filter((_, i) => shell[i].top < height || app[i].top < height).map((b) => b.text);
    assert.deepEqual(seen(app), seen(shell));
    assert.deepEqual(errors, []);
    // Another page than the studio: the shell is its header only.
    const other = await context.newPage();
    await other.route(/\/parallax-app-[0-9a-f]+_bg\.wasm$/, (route) => route.abort('internetdisconnected'));
    await visit(other, base + '/history');
    assert.equal(await other.locator('#shell .drop').count(), 0);
    await context.close();
  });
}
