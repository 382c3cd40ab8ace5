// The JavaScript `fetch` example of 1min.ai's Flux Depth Pro docs
// (../shared/reference/004_…), run in Node as written with only the host, the key and
// imageUrl changed (an image uploaded first, as 1min.ai's asset API does it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.env.PARALLAX_BASE_URL ?? 'http://127.0.0.1:8787';
const keys = Object.fromEntries(
  (process.env.PARALLAX_TEST_KEYS ?? '').split(',').map((p) => p.split('=')),
);
const YOUR_API_KEY = keys.rich;

async function uploadAsset(sample) {
  const form = new FormData();
  const bytes = await readFile(path.join(here, '../../public/samples', sample));
  form.append('asset', new Blob([bytes], { type: 'image/jpeg' }), sample);
  const response = await fetch(`${base}/api/assets`, {
    method: 'POST',
    headers: { 'API-KEY': YOUR_API_KEY },
    body: form,
  });
  assert.equal(response.status, 200);
  return (await response.json()).fileContent.path;
}

test('the 1min.ai fetch example gets an image from the edge', async () => {
  const imageUrl = await uploadAsset('chelsea.jpg');
  const response = await fetch(`${base}/api/features`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'API-KEY': YOUR_API_KEY,
    },
    body: JSON.stringify({
      type: 'IMAGE_EDITOR',
      model: 'black-forest-labs/flux-depth-pro',
      promptObject: {
        imageUrl,
        prompt: 'Add realistic depth blur to background while keeping subject sharp',
        seed: 42,
        steps: 28,
        prompt_upsampling: true,
        guidance: 3.5,
        safety_tolerance: 2,
        format: 'jpg',
      },
    }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const { aiRecord } = await response.json();
  assert.equal(aiRecord.status, 'SUCCESS');
  assert.equal(aiRecord.aiRecordDetail.promptObject.imageUrl, imageUrl);
  assert.deepEqual(aiRecord.aiRecordDetail.responseObject, {});
  const image = await fetch(aiRecord.temporaryUrl);
  assert.equal(image.status, 200);
  assert.equal(image.headers.get('content-type'), 'image/jpeg');
  const head = new Uint8Array(await image.arrayBuffer()).slice(0, 3);
  assert.deepEqual([...head], [0xff, 0xd8, 0xff]);
});
