// Drives `neurodex serve` in headless Chromium with a fake camera that plays a .y4m
// file: the page starts the camera, the feature-map grid updates several times (and
// changes, since the picture moves), a click on a channel shows its top-9 crops from
// the index, and a screenshot is saved; where the index has labels, the concept
// picker goes to a concept's best unit (one whose label is markup, if there is one)
// and its labels show as text. Prints one JSON line with what it measured.
//
// usage: node serve.mjs URL OUTDIR [Y4M]   (Y4M defaults to OUTDIR/camera.y4m)
// env:   CHROMIUM (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const [url, outArg, y4mArg] = process.argv.slice(2);
if (!url || !outArg) {
  console.error('usage: node serve.mjs URL OUTDIR [Y4M]');
  process.exit(2);
}
const out = resolve(outArg);
const y4m = resolve(y4mArg ?? join(out, 'camera.y4m'));
const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`FAIL ${msg}`);
};

const userDataDir = mkdtempSync(join(tmpdir(), 'neurodex-serve-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-video-capture=${y4m}`,
  ],
  viewport: { width: 1400, height: 950 },
});
// page.waitForFunction evaluates strings, which the page's CSP (rightly) forbids;
// poll with page.evaluate instead.
async function waitFor(page, fn, arg, timeout, what) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
const result = { frames: 0, fps: null, grid_changes: 0, top9: 0, concepts: 0 };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => fail(`script error: ${e}`));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`console: ${m.text()}`); });

  const resp = await page.goto(url, { waitUntil: 'load' });
  if (!resp || !resp.ok()) throw new Error(`${url}: HTTP ${resp && resp.status()}`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 20000 });

  await page.click('#src-camera');
  const frames = () => page.evaluate(() => Number(document.body.dataset.frames || 0));
  // A digest of the grid's pixels, to see it change as the camera picture moves.
  const gridDigest = () => page.evaluate(() => {
    const c = document.getElementById('grid');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 2166136261, lit = 0;
    for (let i = 0; i < d.length; i += 4) {
      h = Math.imul(h ^ d[i], 16777619);
      if (d[i] > 100) lit++;
    }
    return { h: h >>> 0, lit, w: c.width, hgt: c.height };
  });
  await waitFor(page, () => Number(document.body.dataset.frames || 0) >= 3, null, 60000, 'the first replies');
  const digests = [];
  let last = await frames();
  // Several updates: sample the grid after each of the next 10 replies.
  while (digests.length < 10) {
    await waitFor(page, (n) => Number(document.body.dataset.frames || 0) > n, last, 30000, 'a grid update');
    last = await frames();
    digests.push(await gridDigest());
  }
  result.frames = await frames();
  result.grid_changes = digests.slice(1).filter((d, i) => d.h !== digests[i].h).length;
  if (result.grid_changes < 2) fail(`the grid changed only ${result.grid_changes} times over 10 replies`);
  if (!digests.some((d) => d.lit > 0)) fail('the grid is blank');
  // Let the frame rate settle over a few seconds of steady streaming.
  await page.waitForTimeout(4000);
  result.fps = Number(await page.evaluate(() => document.body.dataset.fps));
  result.fps_text = await page.textContent('#fps');
  result.frames = await frames();
  result.layer = await page.inputValue('#layer');

  // Click the middle of channel 5's cell.
  const g = await page.evaluate(() => ({ ...document.getElementById('grid').dataset }));
  const k = 5, cols = Number(g.cols), z = Number(g.z), gap = Number(g.gap);
  const x = (gap + (k % cols) * Number(g.cw) + (Number(g.cw) - gap) / 2) * z;
  const y = (gap + Math.floor(k / cols) * Number(g.ch) + (Number(g.ch) - gap) / 2) * z;
  await page.click('#grid', { position: { x, y } });
  await waitFor(page, () => {
    const imgs = [...document.querySelectorAll('#top9 img')];
    return imgs.length === 9 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, null, 30000, 'the top-9 crops');
  result.top9 = await page.locator('#top9 img').count();
  result.unit_title = await page.textContent('#unit-title');
  if (!result.unit_title.includes('unit 5')) fail(`unit pane shows "${result.unit_title}", not unit 5`);
  // The zoomed channel keeps updating with the camera.
  const f0 = await frames();
  await waitFor(page, (n) => Number(document.body.dataset.frames || 0) > n + 2, f0, 30000, 'updates after the click');
  // The unit's guided projection comes with each frame (the default mode).
  await waitFor(page, () => Number(document.body.dataset.projections || 0) >= 3, null, 30000, 'projections');
  result.projections = await page.evaluate(() => Number(document.body.dataset.projections || 0));
  result.projection_colours = await page.evaluate(() => {
    const c = document.getElementById('proj');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  });
  result.projection_note = await page.textContent('#proj-note');
  await page.waitForTimeout(300);

  result.screenshot = join(out, 'serve.png');
  await page.screenshot({ path: result.screenshot, fullPage: true });
  const err = await page.textContent('#status');
  if (await page.$('#status.error')) fail(`page shows an error: ${err}`);

  // The other inputs. A file that is no picture: the server says why, the page shows
  // it and keeps working.
  await page.setInputFiles('#src-image', { name: 'bad.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('not a picture') });
  await waitFor(page, () => !!document.querySelector('#status.error'), null, 20000, 'the bad-upload message');
  result.bad_upload_message = await page.textContent('#status');
  if (!result.bad_upload_message.includes('400')) fail(`bad upload shows "${result.bad_upload_message}"`);
  // An uploaded picture (the screenshot just taken), then another layer for it.
  let n = await frames();
  await page.setInputFiles('#src-image', result.screenshot);
  await waitFor(page, (k) => Number(document.body.dataset.frames || 0) > k, n, 20000, 'the uploaded picture');
  await page.selectOption('#layer', 'stem');
  await waitFor(page, () => document.getElementById('grid-title').textContent.startsWith('stem'), null, 20000, 'the stem grid');
  result.stem_title = await page.textContent('#grid-title');
  // An indexed image, fetched by id.
  n = await frames();
  await page.selectOption('#src-dataset', { index: 2 });
  await waitFor(page, (k) => Number(document.body.dataset.frames || 0) > k, n, 20000, 'the indexed image');
  result.dataset_status = await page.textContent('#status');
  if (await page.$('#status.error')) fail(`indexed image: ${result.dataset_status}`);
  await page.screenshot({ path: join(out, 'serve-indexed.png'), fullPage: true });

  // A local video file played in the page: record a short WebM in the browser itself
  // (a canvas with a moving square) and hand it to the file input.
  n = await frames();
  await page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const g = c.getContext('2d');
    const rec = new MediaRecorder(c.captureStream(15), { mimeType: 'video/webm' });
    const parts = [];
    rec.ondataavailable = (e) => parts.push(e.data);
    const done = new Promise((ok) => { rec.onstop = ok; });
    rec.start();
    for (let i = 0; i < 20; i++) {
      g.fillStyle = '#246'; g.fillRect(0, 0, 320, 240);
      g.fillStyle = '#fc3'; g.fillRect(20 + i * 12, 80, 60, 60);
      await new Promise((ok) => setTimeout(ok, 60));
    }
    rec.stop();
    await done;
    const dt = new DataTransfer();
    dt.items.add(new File(parts, 'clip.webm', { type: 'video/webm' }));
    const input = document.getElementById('src-video');
    input.files = dt.files;
    input.dispatchEvent(new Event('change'));
  });
  await waitFor(page, (k) => Number(document.body.dataset.frames || 0) > k + 5, n, 30000, 'frames from the video file');
  result.video_status = await page.textContent('#status');
  if (await page.$('#status.error')) fail(`video file: ${result.video_status}`);

  // "Go to the best unit" for a concept: the layer and unit switch as if picked.
  result.concepts = await page.evaluate(() => Number(document.body.dataset.concepts || 0));
  if (result.concepts > 0) {
    const pick = await page.evaluate(() => {
      const opts = [...document.querySelectorAll('#concept option')];
      const o = opts.find((x) => x.textContent.includes('<')) || opts[0];
      return { value: o.value, layer: o.dataset.layer, unit: o.dataset.unit, text: o.textContent };
    });
    await page.selectOption('#concept', pick.value);
    await page.click('#concept-best');
    const title = `${pick.layer} · unit ${pick.unit}`;
    await waitFor(page, (t) => document.getElementById('unit-title').textContent === t
      && document.querySelectorAll('#concept-rows tr').length > 0
      && document.querySelectorAll('#top9 img').length === 9, title, 30000, `the concepts of ${title}`);
    result.concept_pick = pick.text;
    result.concept_unit = await page.textContent('#unit-title');
    result.concept_layer = await page.inputValue('#layer');
    result.concept_rows = await page.locator('#concept-rows tr').count();
    result.concept_labels = await page.textContent('#unit-labels');
    // Markup in a label stays text: no element made of it.
    result.injected = await page.evaluate(() => document.querySelectorAll('#unit-pane script, #unit-pane b').length);
    if (result.concept_layer !== pick.layer) fail(`layer ${result.concept_layer}, not ${pick.layer}`);
    if (result.injected) fail(`${result.injected} elements made from label text`);
    await page.screenshot({ path: join(out, 'serve-concepts.png'), fullPage: true });
  }
} catch (e) {
  fail(String(e && e.stack ? e.stack : e));
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: join(out, 'serve-failure.png'), fullPage: true });
  } catch {}
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(failures.length ? 1 : 0);
