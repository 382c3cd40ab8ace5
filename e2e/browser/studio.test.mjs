// The playground as a person uses it (issue 5): desktop and a touch phone, the
// compare slider, Remix, Cancel, phone-photo preprocessing, and keyboard-only use.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, base, shots, sample, openPlayground, waitForEnd, noHorizontalScroll, DESKTOP, PHONE, visit } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function flow(options, name) {
  const { page, context, errors } = await openPlayground(browser, options);
  await page.getByTestId('control-image').setInputFiles(sample('astronaut.jpg'));
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
  await page.getByTestId('prompt').fill(`an astronaut made of porcelain (${name})`);
  await page.getByTestId('generate').click();
  assert.equal(await waitForEnd(page), 'Done');

  // The compare slider: drag (or tap) to reveal more of the control image.
  const range = page.getByTestId('compare-range').first();
  await range.scrollIntoViewIfNeeded();
  const box = await range.boundingBox();
  if (options.hasTouch) {
    await page.touchscreen.tap(box.x + box.width * 0.8, box.y + box.height / 2);
  } else {
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
  }
  const value = Number(await range.inputValue());
  assert.ok(value > 65, `slider moved to ${value}`);
  await page.screenshot({ path: path.join(shots, `studio-${name}-result.png`) });

  // Remix: the job's parameters come back into the form, seed kept.
  const seedUsed = await page.evaluate(async () => {
    const id = document.querySelector('[data-testid=job]').dataset.requestId;
    return (await (await fetch(`/v2/requests/${id}`)).json()).seed;
  });
  await page.getByTestId('prompt').fill('something else');
  await page.getByTestId('job-remix').first().click();
  assert.match(await page.getByTestId('prompt').inputValue(), /porcelain/);
  await page.getByText('Advanced').click();
  assert.equal(await page.getByTestId('seed').inputValue(), String(seedUsed));

  // A second, slow job, canceled.
  await page.getByTestId('prompt').fill('this takes a while [sim:slow]');
  await page.getByTestId('generate').click();
  const cancel = page.getByTestId('job-cancel').first();
  await cancel.waitFor();
  await cancel.click();
  assert.equal(await waitForEnd(page), 'Failed');
  assert.match(await page.getByTestId('job-error').first().textContent(), /cancel/i);

  assert.equal(await noHorizontalScroll(page), true, 'no horizontal scroll');
  await page.screenshot({ path: path.join(shots, `studio-${name}.png`), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
}

test('desktop: upload, generate, compare, remix, cancel', () => flow(DESKTOP, 'desktop'));
test('phone with touch: upload, generate, compare, remix, cancel', () => flow(PHONE, 'phone'));

test('phone layout: tap targets are at least 44 px and Generate stays in view', async () => {
  const { page, context } = await openPlayground(browser, PHONE);
  const small = await page.evaluate(() => [...document.querySelectorAll('button, .button, select, input:not([type=range]):not([type=checkbox]):not(.visually-hidden), textarea, summary')]
    .filter((el) => el.offsetParent !== null)
    .map((el) => [el.textContent.trim().slice(0, 20) || el.id || el.className, el.getBoundingClientRect().height])
    .filter(([, h]) => h < 44));
  assert.deepEqual(small, []);
  await page.getByTestId('prompt').focus();
  const generate = await page.getByTestId('generate').boundingBox();
  assert.ok(generate.y + generate.height <= 844, 'Generate visible while typing');
  assert.equal(await noHorizontalScroll(page), true);
  await context.close();
});

test('a phone photo with EXIF orientation 6 is uploaded upright and small', async () => {
  const context = await browser.newContext(PHONE);
  // Keep a copy of what the app uploads (multipart bodies with files are not
  // visible to the test's request events).
  await context.addInitScript(() => {
    const original = window.fetch;
    window.fetch = async (input, init) => {
      // The job's upload (not the picked image's depth preview, sent first).
      if (input instanceof Request && input.method === 'POST' && !input.url.endsWith('/v2/depth-anything-v2')) {
        const form = await input.clone().formData();
        const file = form.get('control_image');
        if (file instanceof Blob) window.__uploaded = [...new Uint8Array(await file.arrayBuffer())];
      }
      return original(input, init);
    };
  });
  const page = await context.newPage();
  await visit(page, base + '/');
  // A 12 MP landscape JPEG whose stored left half is red, right half blue, tagged
  // "rotate 90° clockwise": upright, red is on top.
  const stored = await page.evaluate(async () => {
    const c = new OffscreenCanvas(4032, 3024);
    const g = c.getContext('2d');
    g.fillStyle = 'rgb(220,20,20)'; g.fillRect(0, 0, 2016, 3024);
    g.fillStyle = 'rgb(20,20,220)'; g.fillRect(2016, 0, 2016, 3024);
    for (let i = 0; i < 4000; i++) { g.fillStyle = `hsl(${i % 360} 60% 50%)`; g.fillRect((i * 97) % 4032, (i * 61) % 3024, 9, 9); }
    const blob = await c.convertToBlob({ type: 'image/jpeg', quality: 0.95 });
    return [...new Uint8Array(await blob.arrayBuffer())];
  });
  const exif = Buffer.from([0xff, 0xe1, 0x00, 0x22, 0x45, 0x78, 0x69, 0x66, 0x00, 0x00,
    0x4d, 0x4d, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01,
    0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00]);
  const photo = Buffer.concat([Buffer.from(stored.slice(0, 2)), exif, Buffer.from(stored.slice(2))]);
  assert.ok(photo.length > 500_000, `a big original (${photo.length} bytes)`);

  await page.getByTestId('control-image').setInputFiles({ name: 'IMG_0001.jpg', mimeType: 'image/jpeg', buffer: photo });
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor({ timeout: 20_000 });
  await page.getByTestId('prompt').fill('upright please');
  await page.getByTestId('generate').click();
  await page.waitForFunction(() => window.__uploaded);
  const jpeg = Buffer.from(await page.evaluate(() => window.__uploaded));
  assert.deepEqual([...jpeg.subarray(0, 3)], [0xff, 0xd8, 0xff], 'a JPEG was uploaded');
  assert.ok(jpeg.length < 2_000_000, `uploaded ${jpeg.length} bytes`);
  const [w, h, top, bottom] = await page.evaluate(async (bytes) => {
    const bmp = await createImageBitmap(new Blob([new Uint8Array(bytes)], { type: 'image/jpeg' }));
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    const px = (x, y) => [...g.getImageData(x, y, 1, 1).data.slice(0, 3)];
    return [bmp.width, bmp.height, px(bmp.width / 2, 5), px(bmp.width / 2, bmp.height - 5)];
  }, [...jpeg]);
  assert.ok(h > w, `portrait after EXIF rotation: ${w}×${h}`);
  assert.ok(w * h <= 1_000_000 * 1.01, `downscaled to ~1 MP: ${w}×${h}`);
  assert.ok(top[0] > 150 && top[2] < 100, `red on top: ${top}`);
  assert.ok(bottom[2] > 150 && bottom[0] < 100, `blue at the bottom: ${bottom}`);
  await context.close();
});

test('keyboard only: pick, prompt, generate, compare and remix without a pointer', async () => {
  const { page, context, errors } = await openPlayground(browser, DESKTOP);
  const focusName = () => page.evaluate(() => document.activeElement?.dataset.testid ?? document.activeElement?.id ?? '');
  // Tab to the file input and open it from the keyboard.
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.keyboard.press('Tab');
    found = (await focusName()) === 'control-image';
  }
  assert.ok(found, 'the file input is reachable with Tab');
  // Space opens a focused file input; Enter too, should the first key be swallowed.
  let chooser = null;
  for (const key of ['Space', 'Enter', 'Space']) {
    const waiting = page.waitForEvent('filechooser', { timeout: 5_000 }).catch(() => null);
    await page.keyboard.press(key);
    chooser = await waiting;
    if (chooser) break;
  }
  assert.ok(chooser, 'the keyboard opens the file chooser');
  await chooser.setFiles(sample('coffee.jpg'));
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
  for (let i = 0; i < 30 && (await focusName()) !== 'prompt'; i++) await page.keyboard.press('Tab');
  assert.equal(await focusName(), 'prompt');
  await page.keyboard.type('a cup of coffee on the moon');
  await page.keyboard.press('Control+Enter');
  assert.equal(await waitForEnd(page), 'Done');
  for (let i = 0; i < 60 && (await focusName()) !== 'compare-range'; i++) await page.keyboard.press('Tab');
  assert.equal(await focusName(), 'compare-range', 'the compare slider is reachable');
  await page.keyboard.press('End');
  assert.equal(await page.getByTestId('compare-range').first().inputValue(), '100');
  for (let i = 0; i < 20 && (await focusName()) !== 'job-remix'; i++) await page.keyboard.press('Tab');
  assert.equal(await focusName(), 'job-remix');
  await page.keyboard.press('Enter');
  assert.equal(await focusName(), 'prompt', 'Remix returns focus to the prompt');
  assert.deepEqual(errors, []);
  await context.close();
});

test('an invalid access key gets a clear message', async () => {
  const { page, context } = await openPlayground(browser, DESKTOP);
  await page.getByTestId('settings').click();
  await page.locator('#access-key').fill('px_wrong');
  await page.locator('#access-key').press('Tab');
  await page.getByTestId('control-image').setInputFiles(sample('chelsea.jpg'));
  await page.getByText(/Will upload/).waitFor();
  await page.getByTestId('prompt').fill('with a bad key');
  await page.getByTestId('generate').click();
  const err = page.getByTestId('job-error').first();
  await err.waitFor();
  assert.match(await err.textContent(), /API key is invalid.*Settings/);
  await context.close();
});
