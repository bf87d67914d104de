// Opens a neurodex gallery in headless Chromium, from file:// and from a static HTTP
// server, and checks that every image on the visited pages loads (naturalWidth > 0),
// that every relative link on them resolves to a file, and takes screenshots.
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
console.log(JSON.stringify({ pages, images, links, failures: failures.length }));
process.exit(failures.length ? 1 : 0);
