// Shared setup for the browser tests: Debian's Chromium via playwright-core.
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
export const base = process.env.PARALLAX_BASE_URL ?? 'http://127.0.0.1:8787';
export const shots = path.join(root, 'target', 'screenshots');
export const sample = (name) => path.join(root, 'public', 'samples', name);
mkdirSync(shots, { recursive: true });

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

export const DESKTOP = { viewport: { width: 1280, height: 860 } };
export const PHONE = { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true, deviceScaleFactor: 2 };

export async function openPlayground(browser, options) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/');
  await page.getByTestId('generate').waitFor();
  return { page, context, errors };
}

/// Waits until the newest job card shows Done or Failed, and returns that text.
export async function waitForEnd(page, timeout = 60_000) {
  const status = page.getByTestId('job-status').first();
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const s = (await status.textContent())?.trim();
    if (s === 'Done' || s === 'Failed') return s;
    await page.waitForTimeout(100);
  }
  throw new Error('job did not end');
}

export async function noHorizontalScroll(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
}
