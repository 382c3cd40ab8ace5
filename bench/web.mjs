// Measures the playground in Debian's Chromium (`cargo xtask bench` runs it):
// - `weight`: every file the first view of `/` fetches on a phone with a fresh profile,
//   with its size and its gzip -9 size (text and wasm compress; images are counted as
//   they are), and whether it is code (HTML, JS, wasm, CSS);
// - `prepare`: a 12 MP JPEG picked in the studio, decoded upright, downscaled and
//   re-encoded in the browser: the app's `parallax:prepare` performance measure
//   (median of three, a fresh profile each time), and the bytes the submit then
//   uploads.
// - `depth`: pick → depth map shown in the studio (the app's `parallax:depth` measure,
//   from the pick to the depth map's image loaded), on the sim: three new images
//   (each a preview job upstream), then the last one picked again in the same tab (the
//   app remembers it: no request) and in a new tab (with an access key the API keeps
//   the account's previews by the image's hash: no upstream preview); with the image's own preparation
//   (`parallax:prepare`), so the preview's added latency is the difference.
// Usage: node bench/web.mjs <base url> <12 MP jpeg> <access key>; prints one JSON object.
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const [base, photo, key] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
const COMPRESSIBLE = /(javascript|css|html|wasm|json|svg|text|manifest)/;

async function weight() {
  const context = await browser.newContext(PHONE);
  const page = await context.newPage();
  const pending = [];
  page.on('requestfinished', (req) => pending.push((async () => {
    const resp = await req.response();
    if (!resp || !req.url().startsWith(base)) return null;
    const body = await resp.body().catch(() => Buffer.alloc(0));
    const type = (resp.headers()['content-type'] ?? '').split(';')[0];
    const compressible = COMPRESSIBLE.test(type);
    return {
      path: new URL(req.url()).pathname,
      type,
      bytes: body.length,
      gzip: compressible ? gzipSync(body, { level: 9 }).length : body.length,
      core: /(javascript|css|html|wasm)/.test(type),
    };
  })()));
  await page.goto(base + '/', { waitUntil: 'networkidle' });
  await page.getByTestId('generate').waitFor();
  await page.waitForLoadState('networkidle');
  const files = (await Promise.all(pending)).filter(Boolean);
  await context.close();
  return files;
}

async function prepare() {
  const runs = [];
  let info = '';
  let uploaded = 0;
  for (let i = 0; i < 3; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    // The bytes of each submit as the browser sends them (a FormData body's exact
    // multipart encoding; Playwright cannot see blob bodies).
    await context.addInitScript(() => {
      const original = window.fetch;
      window.__uploads = [];
      window.fetch = async function (input, init) {
        // A job's submit (not the picked image's depth preview, sent first).
        if (input instanceof Request && input.method === 'POST' && !input.url.endsWith('/v2/depth-anything-v2')) {
          window.__uploads.push((await input.clone().arrayBuffer()).byteLength);
        } else if (init?.body instanceof FormData) {
          window.__uploads.push((await new Response(init.body).arrayBuffer()).byteLength);
        }
        return original.apply(this, arguments);
      };
    });
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.getByTestId('generate').waitFor();
    await page.getByTestId('control-image').setInputFiles(photo);
    await page.waitForFunction(() => performance.getEntriesByName('parallax:prepare').length > 0,
      null, { timeout: 60_000 });
    runs.push(await page.evaluate(() => performance.getEntriesByName('parallax:prepare')[0].duration));
    info = (await page.locator('#control-info').textContent())?.trim() ?? '';
    if (i === 0) {
      // The real upload: the submit's body as the browser sends it.
      await page.getByTestId('prompt').fill('bench: preprocessing upload size');
      await page.getByTestId('generate').click();
      await page.waitForFunction(() => window.__uploads.length > 0);
      uploaded = await page.evaluate(() => window.__uploads[0]);
    }
    await context.close();
  }
  runs.sort((a, b) => a - b);
  return { runs_ms: runs, median_ms: runs[1], info, uploaded_bytes: uploaded };
}

/// A 1 MP JPEG of random shapes, new each call (a new image to the API's cache).
async function newImage(page) {
  return Buffer.from(await page.evaluate(async () => {
    const c = new OffscreenCanvas(1200, 800);
    const g = c.getContext('2d');
    g.fillStyle = `hsl(${Math.random() * 360} 40% 60%)`;
    g.fillRect(0, 0, 1200, 800);
    for (let i = 0; i < 60; i++) {
      g.fillStyle = `hsl(${Math.random() * 360} 60% ${20 + Math.random() * 60}%)`;
      g.fillRect(Math.random() * 1200, Math.random() * 800, 40 + Math.random() * 300, 40 + Math.random() * 300);
    }
    const blob = await c.convertToBlob({ type: 'image/jpeg', quality: 0.9 });
    return [...new Uint8Array(await blob.arrayBuffer())];
  }));
}

async function depth() {
  const open = async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    // With a key: the API keeps a keyed account's previews by the image's hash.
    await context.addInitScript((k) => localStorage.setItem('parallax.key', k), key);
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.getByTestId('generate').waitFor();
    return { context, page };
  };
  const pick = async (page, buffer) => {
    await page.evaluate(() => { performance.clearMeasures('parallax:depth'); performance.clearMeasures('parallax:prepare'); });
    await page.getByTestId('control-image').setInputFiles({ name: 'bench.jpg', mimeType: 'image/jpeg', buffer });
    await page.waitForFunction(() => performance.getEntriesByName('parallax:depth').length > 0, null, { timeout: 60_000 });
    return page.evaluate(() => ({
      shown_ms: performance.getEntriesByName('parallax:depth')[0].duration,
      prepare_ms: performance.getEntriesByName('parallax:prepare')[0]?.duration ?? 0,
    }));
  };
  const { context, page } = await open();
  const runs = [];
  let image;
  for (let i = 0; i < 3; i++) {
    image = await newImage(page);
    runs.push(await pick(page, image));
  }
  // The same image again: in this tab (remembered by the app, no request at all), and
  // in a new tab (the API answers the account's earlier preview, nothing upstream).
  const again = await pick(page, image);
  await context.close();
  const fresh = await open();
  const elsewhere = await pick(fresh.page, image);
  await fresh.context.close();
  runs.sort((a, b) => a.shown_ms - b.shown_ms);
  return { runs, median: runs[1], again, elsewhere };
}

try {
  console.log(JSON.stringify({ weight: await weight(), prepare: await prepare(), depth: await depth() }));
} finally {
  await browser.close();
}
