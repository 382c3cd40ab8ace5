// The studio is told, not polling (issue 18, item 2): a running job is read with held
// status reads (`status?wait=25&seen=…`), answered when its status changes, so a
// finished job shows after a couple of requests however long it ran; and only a few
// reads are held at once, so the page keeps connections for everything else.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, base, DESKTOP, visit } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const STATUS = /^\/v2\/requests\/([^/]+)\/status$/;

/// The studio, recording every status read it sends: `{ id, wait, seen }` in order,
/// and the most held reads out at once.
async function open() {
  const context = await browser.newContext(DESKTOP);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const reads = [];
  const held = { now: 0, most: 0 };
  const out = new Set();
  page.on('request', (r) => {
    const url = new URL(r.url());
    const m = STATUS.exec(url.pathname);
    if (!m) return;
    const wait = url.searchParams.get('wait');
    reads.push({ id: m[1], wait, seen: url.searchParams.get('seen') });
    if (wait) {
      out.add(r);
      held.now += 1;
      held.most = Math.max(held.most, held.now);
    }
  });
  const ended = (r) => { if (out.delete(r)) held.now -= 1; };
  page.on('requestfinished', ended);
  page.on('requestfailed', ended);
  await visit(page, base + '/');
  await page.getByTestId('sample').first().click();
  await page.getByText(/Will upload \d+×\d+ JPEG/).waitFor();
  return { context, page, errors, reads, held };
}

async function submit(page, prompt) {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('generate').click();
  const card = page.locator('[data-testid="job"][data-request-id]').filter({ hasText: prompt }).first();
  await card.waitFor();
  return { card, id: await card.getAttribute('data-request-id') };
}

async function done(card) {
  await card.getByTestId('job-status').filter({ hasText: /^\s*(Done|Failed)\s*$/ }).waitFor({ timeout: 90_000 });
  return (await card.getByTestId('job-status').textContent()).trim();
}

test('desktop: a 6 s job shows its image after two held status reads, no poll loop', async () => {
  const { context, page, errors, reads } = await open();
  const { card, id } = await submit(page, 'told when it is done [sim:process=6]');
  assert.equal(await done(card), 'Done');
  await card.getByTestId('job-output').first().waitFor();
  const mine = reads.filter((r) => r.id === id);
  console.log(`# the studio made ${mine.length} status requests for a 6 s job: ${JSON.stringify(mine.map((r) => r.seen))}`);
  // QUEUED → PROCESSING → COMPLETED: one held read per step, whatever the job's length
  // (a 1 s poller makes one a second).
  assert.ok(mine.length >= 1 && mine.length <= 3, `${mine.length} status reads: ${JSON.stringify(mine)}`);
  assert.ok(mine.every((r) => r.wait === '25'), `every read held: ${JSON.stringify(mine)}`);
  assert.equal(mine[0].seen, 'QUEUED', 'the first passes the status the submit answered');
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: with four jobs running at once, at most two reads are held and all four end', async () => {
  const { context, page, errors, reads, held } = await open();
  const jobs = [];
  for (let n = 0; n < 4; n++) jobs.push(await submit(page, `one of four, number ${n} [sim:process=5]`));
  for (const { card } of jobs) assert.equal(await done(card), 'Done');
  const ids = new Set(jobs.map((j) => j.id));
  const theirs = reads.filter((r) => ids.has(r.id));
  console.log(`# four 5 s jobs: ${theirs.length} status requests, ${theirs.filter((r) => r.wait).length} held, at most ${held.most} held at once`);
  assert.ok(held.most >= 1 && held.most <= 2, `held at once: ${held.most}`);
  assert.ok(theirs.some((r) => !r.wait), 'the others were polled meanwhile');
  // The page's own requests still go through while reads are held.
  const listed = await page.evaluate(async () => (await fetch('/healthz')).status);
  assert.equal(listed, 200);
  assert.deepEqual(errors, []);
  await context.close();
});
