// Opens a neurodex gallery in headless Chromium, from file:// and from a static HTTP
// server, and checks that every image on the visited pages loads (naturalWidth > 0),
// that every relative link on them resolves to a file, that the arrow keys, the jump
// box and sorting work, that a dead unit's page says so, and takes screenshots.
//
// usage: node gallery.mjs GALLERY_DIR SCREENSHOT_DIR
// env:   CHROMIUM (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [dirArg, shotsArg] = process.argv.slice(2);
if (!dirArg || !shotsArg) {
  console.error('usage: node gallery.mjs GALLERY_DIR SCREENSHOT_DIR');
  process.exit(2);
}
const root = resolve(dirArg);
const shots = resolve(shotsArg);
const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`FAIL ${msg}`);
};

// A minimal static server: what "any static server" does, nothing more.
const types = { '.html': 'text/html', '.css': 'text/css', '.json': 'application/json', '.jpg': 'image/jpeg', '.png': 'image/png' };
const server = createServer((req, res) => {
  const path = join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  if (!path.startsWith(root) || !existsSync(path) || !statSync(path).isFile()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' });
  res.end(readFileSync(path));
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const httpBase = `http://127.0.0.1:${server.address().port}/`;

const userDataDir = mkdtempSync(join(tmpdir(), 'neurodex-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1200, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
page.on('pageerror', (e) => fail(`script error on ${page.url()}: ${e}`));

/// Loads `url`, forces every lazy image to load, and checks them all; returns the
/// page's links (absolute URLs, fragments dropped).
async function visit(url) {
  const resp = await page.goto(url, { waitUntil: 'load' });
  if (resp && !resp.ok()) fail(`${url}: HTTP ${resp.status()}`);
  await page.evaluate(() => document.querySelectorAll('img').forEach((i) => { i.loading = 'eager'; }));
  await page.waitForFunction(() => [...document.images].every((i) => i.complete), null, { timeout: 60000 });
  const imgs = await page.evaluate(() => [...document.images].map((i) => [i.getAttribute('src'), i.naturalWidth]));
  for (const [src, w] of imgs) if (!(w > 0)) fail(`${url}: image ${src} did not load`);
  const links = await page.evaluate(() => [...document.querySelectorAll('a[href]')].map((a) => a.href));
  return { images: imgs.length, links: links.map((l) => l.split('#')[0]) };
}

function fileOf(url) {
  if (url.startsWith('file:')) return fileURLToPath(url);
  if (url.startsWith(httpBase)) return join(root, decodeURIComponent(new URL(url).pathname));
  return null;
}

// From file://: the index, every layer page, and on each layer its first, middle and
// last unit pages plus the neighbours they link to. Every link seen must resolve.
const indexUrl = pathToFileURL(join(root, 'index.html')).href;
const seen = new Set();
const queue = [indexUrl];
let pages = 0, images = 0, links = 0;
while (queue.length) {
  const url = queue.shift();
  if (seen.has(url)) continue;
  seen.add(url);
  const r = await visit(url);
  pages++;
  images += r.images;
  const units = [];
  for (const l of r.links) {
    const f = fileOf(l);
    if (f === null) {
      fail(`${url}: link leaves the gallery: ${l}`);
      continue;
    }
    links++;
    if (!existsSync(f)) fail(`${url}: broken link ${l}`);
    else if (l.endsWith('.html') && l.includes('/layers/') && url === indexUrl) queue.push(l);
    else if (l.endsWith('.html') && l.includes('/units/')) units.push(l);
  }
  if (url.includes('/layers/')) {
    const picks = [units[0], units[Math.floor(units.length / 2)], units[units.length - 1]];
    for (const u of picks) if (u && !seen.has(u)) queue.push(u);
  }
}

// Interaction, from file://: arrow keys, the jump box, sorting, a dead unit's page,
// and how long the widest layer's page takes to load.
const checks = {};
const gallery = JSON.parse(readFileSync(join(root, 'gallery.json'), 'utf8'));
const widest = gallery.layers.reduce((a, b) => (b.units > a.units ? b : a));
const layerUrl = pathToFileURL(join(root, widest.page)).href;
let t0 = Date.now();
await page.goto(layerUrl, { waitUntil: 'load' });
checks.widest_layer_load_ms = Date.now() - t0;
checks.widest_layer = widest.name;
const last = widest.units - 1;
await page.fill('#jump-unit', String(last));
await page.press('#jump-unit', 'Enter');
await page.waitForURL((u) => u.href.endsWith(`/${last}.html`), { timeout: 10000 }).catch(() => {});
checks.jump = page.url().endsWith(`/units/${widest.name}/${last}.html`);
if (!checks.jump) fail(`jump box to unit ${last} went to ${page.url()}`);
const unit0 = pathToFileURL(join(root, 'units', widest.name, '0.html')).href;
t0 = Date.now();
await page.goto(unit0, { waitUntil: 'load' });
checks.unit_load_ms = Date.now() - t0;
await page.keyboard.press('ArrowRight');
await page.waitForURL((u) => u.href.endsWith('/1.html'), { timeout: 10000 }).catch(() => {});
checks.arrow_right = page.url().endsWith(`/units/${widest.name}/1.html`);
if (!checks.arrow_right) fail(`ArrowRight on unit 0 went to ${page.url()}`);
await page.keyboard.press('ArrowUp');
await page.waitForURL((u) => u.href.includes('/layers/'), { timeout: 10000 }).catch(() => {});
checks.arrow_up = page.url().split('#')[0] === layerUrl;
if (!checks.arrow_up) fail(`ArrowUp went to ${page.url()}`);
await page.selectOption('#sort', 'max');
const maxes = await page.evaluate(() => [...document.querySelectorAll('#units > .unit')].map((e) => e.dataset.max).filter((v) => v !== '').map(Number));
checks.sort = maxes.length > 1 && maxes.every((v, i) => i === 0 || maxes[i - 1] >= v);
if (!checks.sort) fail(`sorted by max: ${maxes.slice(0, 10)}`);
// A dead unit, on any layer that has one.
checks.dead = null;
for (const l of gallery.layers.filter((x) => x.never_fire > 0)) {
  await page.goto(pathToFileURL(join(root, l.page)).href, { waitUntil: 'load' });
  const href = await page.evaluate(() => document.querySelector('.unit.dead')?.href);
  const card = await page.evaluate(() => document.querySelector('.unit.dead')?.textContent);
  await page.goto(href, { waitUntil: 'load' });
  const text = await page.textContent('body');
  checks.dead = /never fires on the \d+ indexed images/.test(text) && /never fires/.test(card)
    && (await page.locator('.big, .sheetbox').count()) === 0;
  if (!checks.dead) fail(`dead unit page ${href} does not say it never fires`);
  break;
}

// Screenshots: the index, the first layer, one unit page.
const firstLayer = [...seen].find((u) => u.includes('/layers/'));
const firstUnit = [...seen].find((u) => u.includes('/units/'));
for (const [name, url] of [['index', indexUrl], ['layer', firstLayer], ['unit', firstUnit]]) {
  if (!url) {
    fail(`no ${name} page reached`);
    continue;
  }
  await page.goto(url, { waitUntil: 'load' });
  await page.evaluate(() => document.querySelectorAll('img').forEach((i) => { i.loading = 'eager'; }));
  await page.waitForFunction(() => [...document.images].every((i) => i.complete), null, { timeout: 60000 });
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: name !== 'layer' });
}

// The same unit page through a static HTTP server.
if (firstUnit) {
  const rel = fileURLToPath(firstUnit).slice(root.length + 1);
  const r = await visit(httpBase + rel.split('/').map(encodeURIComponent).join('/'));
  images += r.images;
  pages++;
}

await context.close();
server.close();
rmSync(userDataDir, { recursive: true, force: true });
console.log(JSON.stringify({ pages, images, links, ...checks, failures: failures.length }));
process.exit(failures.length ? 1 : 0);
