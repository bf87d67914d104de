// neurodex live view. Sends frames to the server, one in flight at a time, and
// draws the reply: the chosen layer's feature maps (u8, one scale for the layer) as a
// near-square grid, the top-5 classes, and for a clicked channel its zoomed map, its
// filter, its top-9 images from the index and what the index's labels say of it. A
// concept picker goes to a concept's best unit; #layer=L&unit=U in the address opens
// on that unit. With a unit selected, each frame also comes back with that unit's
// projection on the input (backprop, guided backprop or deconvnet: the toolbox's
// backprop pane), drawn beside its zoomed map.
//
// Labels and paths come from the index and may hold markup: they are only ever set
// as textContent, never parsed as HTML.
//
// Reply format of POST /api/frame: u32 LE n, n bytes of JSON header, c*h*w bytes, and
// with ?unit=U&mode=M the projection's size*size RGB pixels.

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

const state = {
  layers: [],
  layer: null,
  source: null, // 'camera' | 'video' | 'still'
  stream: null,
  still: null, // Blob of the still picture
  stillDirty: false,
  unit: null,
  last: null, // { header, maps } of the latest reply
  frames: 0,
  times: [], // arrival times of recent replies
  geom: null, // grid geometry for click hit-testing
  concepts: [], // /api/concepts' list
};

function status(msg, error = false) {
  const s = $('status');
  s.textContent = msg;
  s.classList.toggle('error', error);
}

// A 503 "busy" (the server runs a bounded number of unit reports at once) is asked
// again a few times before it is shown.
async function getJson(url) {
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(url);
    const body = await r.json().catch(() => ({}));
    if (r.status === 503 && body.busy && attempt < 20) {
      await new Promise((done) => setTimeout(done, 250));
      continue;
    }
    if (!r.ok) throw new Error(body.error || `${url}: HTTP ${r.status}`);
    return body;
  }
}

// ---------------------------------------------------------------- sources

function stopSources() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  const v = $('video');
  v.pause();
  v.removeAttribute('src');
  v.srcObject = null;
  for (const id of ['src-camera', 'src-video', 'src-image', 'src-dataset']) {
    const el = $(id);
    (el.closest('label') || el).classList.remove('active');
  }
}

function showInput(kind) {
  $('video').classList.toggle('hidden', kind !== 'video');
  $('still').classList.toggle('hidden', kind !== 'still');
  $('placeholder').classList.toggle('hidden', kind !== null);
}

async function useCamera() {
  stopSources();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (e) {
    status(`camera unavailable: ${e.message || e}`, true);
    return;
  }
  const v = $('video');
  v.srcObject = state.stream;
  await v.play().catch(() => {});
  $('src-camera').classList.add('active');
  state.source = 'camera';
  showInput('video');
  status('camera');
  pump();
}

async function useVideoFile(file) {
  stopSources();
  const v = $('video');
  v.src = URL.createObjectURL(file);
  v.loop = true;
  await v.play().catch((e) => status(`cannot play ${file.name}: ${e.message || e}`, true));
  $('src-video').closest('label').classList.add('active');
  state.source = 'video';
  showInput('video');
  status(file.name);
  pump();
}

function useStill(blob, label, control) {
  stopSources();
  (control.closest('label') || control).classList.add('active');
  const img = $('still');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  state.source = 'still';
  state.still = blob;
  showInput('still');
  status(label);
  sendStill();
}

async function useIndexed(id, path) {
  try {
    const r = await fetch(`/api/image/${encodeURIComponent(id)}`);
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || `HTTP ${r.status}`);
    const sel = $('src-dataset');
    sel.value = String(id);
    useStill(await r.blob(), path, sel);
  } catch (e) {
    status(`cannot load indexed image ${path}: ${e.message}`, true);
  }
}

// ---------------------------------------------------------------- frames

// A JPEG of the current video frame, short side at most 256 px (the network crops
// 87.5% of it to 224).
const grabCanvas = document.createElement('canvas');
function grab(video) {
  const vw = video.videoWidth, vh = video.videoHeight;
  const s = Math.min(1, 256 / Math.min(vw, vh));
  grabCanvas.width = Math.round(vw * s);
  grabCanvas.height = Math.round(vh * s);
  grabCanvas.getContext('2d').drawImage(video, 0, 0, grabCanvas.width, grabCanvas.height);
  return new Promise((ok) => grabCanvas.toBlob(ok, 'image/jpeg', 0.85));
}

// Sends one frame; resolves to 'ok', 'busy' or 'error'.
async function send(blob) {
  const layer = state.layer;
  const q = new URLSearchParams({ layer });
  const mode = $('proj-mode').value;
  if (state.unit !== null && mode) {
    q.set('unit', String(state.unit));
    q.set('mode', mode);
  }
  let r;
  try {
    r = await fetch(`/api/frame?${q}`, { method: 'POST', body: blob });
  } catch (e) {
    status(`server unreachable: ${e.message}`, true);
    return 'error';
  }
  if (r.status === 503) return 'busy';
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    status(`frame refused (${r.status}): ${body.error || r.statusText}`, true);
    return 'error';
  }
  const buf = await r.arrayBuffer();
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const size = header.c * header.h * header.w;
  const maps = new Uint8Array(buf, 4 + n, size);
  if (header.layer !== state.layer) return 'ok'; // layer changed meanwhile
  if (header.projection && header.projection.unit === state.unit) {
    drawProjection(header.projection, new Uint8Array(buf, 4 + n + size));
  }
  state.last = { header, maps };
  state.frames += 1;
  document.body.dataset.frames = String(state.frames);
  tick(header);
  draw();
  return 'ok';
}

let pumping = false;
// The live loop: one frame in flight; a busy server drops the frame and we grab a
// newer one instead of queueing.
async function pump() {
  if (pumping) return;
  pumping = true;
  try {
    while (state.source === 'camera' || state.source === 'video') {
      const v = $('video');
      if (v.readyState < 2 || !v.videoWidth) {
        await sleep(30);
        continue;
      }
      const blob = await grab(v);
      const res = blob ? await send(blob) : 'error';
      if (res === 'busy') await sleep(5);
      else if (res === 'error') await sleep(300);
    }
  } finally {
    pumping = false;
  }
}

let stillSending = false;
async function sendStill() {
  state.stillDirty = true;
  if (stillSending) return;
  stillSending = true;
  try {
    while (state.stillDirty && state.source === 'still') {
      state.stillDirty = false;
      if ((await send(state.still)) === 'busy') {
        state.stillDirty = true;
        await sleep(50);
      }
    }
  } finally {
    stillSending = false;
  }
}

function tick(header) {
  const now = performance.now();
  state.times.push(now);
  while (state.times.length > 2 && now - state.times[0] > 3000) state.times.shift();
  const t = state.times;
  const fps = t.length > 1 ? ((t.length - 1) * 1000) / (t[t.length - 1] - t[0]) : 0;
  const live = state.source === 'camera' || state.source === 'video';
  $('fps').textContent = `${live ? fps.toFixed(1) : '–'} fps · ${header.total_ms.toFixed(0)} ms server`;
  document.body.dataset.fps = live ? fps.toFixed(2) : '';
}

// ---------------------------------------------------------------- drawing

const atlas = document.createElement('canvas');
const GAP = 1;

function draw() {
  const { header: h, maps } = state.last;
  const cols = Math.ceil(Math.sqrt(h.c));
  const rows = Math.ceil(h.c / cols);
  const aw = cols * (h.w + GAP) + GAP, ah = rows * (h.h + GAP) + GAP;
  if (atlas.width !== aw || atlas.height !== ah) {
    atlas.width = aw;
    atlas.height = ah;
  }
  const actx = atlas.getContext('2d');
  const img = actx.createImageData(aw, ah);
  const px = img.data;
  for (let i = 0; i < px.length; i += 4) {
    px[i] = 60; px[i + 1] = 60; px[i + 2] = 70; px[i + 3] = 255;
  }
  const hw = h.h * h.w;
  for (let ch = 0; ch < h.c; ch++) {
    const ox = GAP + (ch % cols) * (h.w + GAP), oy = GAP + Math.floor(ch / cols) * (h.h + GAP);
    for (let y = 0; y < h.h; y++) {
      let o = ((oy + y) * aw + ox) * 4, s = ch * hw + y * h.w;
      for (let x = 0; x < h.w; x++, o += 4) {
        const v = maps[s + x];
        px[o] = v; px[o + 1] = v; px[o + 2] = v;
      }
    }
  }
  actx.putImageData(img, 0, 0);

  const grid = $('grid');
  const maxW = Math.max(320, grid.parentElement.clientWidth - 24), maxH = 760;
  let z = Math.min(maxW / aw, maxH / ah);
  if (z >= 1) z = Math.floor(z);
  const dw = Math.round(aw * z), dh = Math.round(ah * z);
  if (grid.width !== dw || grid.height !== dh) {
    grid.width = dw;
    grid.height = dh;
  }
  const g = grid.getContext('2d');
  g.imageSmoothingEnabled = false;
  g.drawImage(atlas, 0, 0, dw, dh);
  state.geom = { cols, c: h.c, cw: h.w + GAP, chh: h.h + GAP, z };
  // Where cell k is, in canvas pixels, for tests and tools: (GAP + col*cw) * z.
  Object.assign(grid.dataset, { cols, cw: h.w + GAP, ch: h.h + GAP, z, gap: GAP, c: h.c });
  drawNumbers(g, h, cols, z);
  if (state.unit !== null && state.unit < h.c) {
    const ox = GAP + (state.unit % cols) * (h.w + GAP), oy = GAP + Math.floor(state.unit / cols) * (h.h + GAP);
    g.strokeStyle = '#ff4040';
    g.lineWidth = 2;
    g.strokeRect((ox - 1) * z, (oy - 1) * z, (h.w + 2) * z, (h.h + 2) * z);
    drawZoom(h, maps);
  }
  $('grid-title').textContent = `${h.layer} · ${h.c} channels of ${h.h}×${h.w}`;
  $('grid-scale').textContent = `one scale for the layer: black ${h.lo.toFixed(2)} … white ${h.hi.toFixed(2)}; click a channel`;
  drawTop5(h.top5);
  drawOverlay(h.transform);
}

// Each cell's unit number in its corner, where cells are large enough to hold one.
function drawNumbers(g, h, cols, z) {
  const cw = h.w * z;
  if (cw < 18) return;
  const size = Math.max(9, Math.min(13, Math.floor(cw / 4)));
  g.font = `${size}px system-ui, sans-serif`;
  g.textBaseline = 'top';
  for (let ch = 0; ch < h.c; ch++) {
    const x = (GAP + (ch % cols) * (h.w + GAP)) * z, y = (GAP + Math.floor(ch / cols) * (h.h + GAP)) * z;
    const t = String(ch);
    g.fillStyle = 'rgba(0,0,0,0.6)';
    g.fillRect(x, y, g.measureText(t).width + 4, size + 2);
    g.fillStyle = '#ffd600';
    g.fillText(t, x + 2, y + 1);
  }
}

// The channel under a grid position (canvas client coordinates), or null.
function cellAt(ev) {
  const g = state.geom;
  if (!g) return null;
  const r = ev.target.getBoundingClientRect();
  const x = ((ev.clientX - r.left) * ev.target.width) / r.width / g.z;
  const y = ((ev.clientY - r.top) * ev.target.height) / r.height / g.z;
  const col = Math.floor((x - GAP / 2) / g.cw), row = Math.floor((y - GAP / 2) / g.chh);
  const ch = row * g.cols + col;
  if (col < 0 || col >= g.cols || row < 0 || ch >= g.c) return null;
  return ch;
}

function drawZoom(h, maps) {
  const c = $('zoom');
  const small = document.createElement('canvas');
  small.width = h.w;
  small.height = h.h;
  const sctx = small.getContext('2d');
  const img = sctx.createImageData(h.w, h.h);
  const base = state.unit * h.h * h.w, n = h.h * h.w;
  // The channel on its own range, so its shape shows even when it is weak.
  let lo = 255, hi = 0;
  for (let i = 0; i < n; i++) { lo = Math.min(lo, maps[base + i]); hi = Math.max(hi, maps[base + i]); }
  for (let i = 0; i < n; i++) {
    const [r, g, b] = viridis(hi > lo ? (maps[base + i] - lo) / (hi - lo) : 0);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  sctx.putImageData(img, 0, 0);
  const ctx = c.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, c.width, c.height);
}

// A few stops of matplotlib's viridis, linearly interpolated.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
}

// The unit's projection on this frame: RGB bytes, grey = 0.
function drawProjection(p, rgb) {
  const c = $('proj');
  c.width = p.size;
  c.height = p.size;
  const img = c.getContext('2d').createImageData(p.size, p.size);
  for (let i = 0, j = 0; i < p.size * p.size; i += 1, j += 3) {
    img.data[4 * i] = rgb[j];
    img.data[4 * i + 1] = rgb[j + 1];
    img.data[4 * i + 2] = rgb[j + 2];
    img.data[4 * i + 3] = 255;
  }
  c.getContext('2d').putImageData(img, 0, 0);
  $('proj-note').textContent = `max ${p.value.toFixed(2)} at (${p.y}, ${p.x}) · ${p.ms.toFixed(0)} ms`;
  document.body.dataset.projections = String(Number(document.body.dataset.projections || 0) + 1);
}

function drawTop5(top5) {
  const ol = $('top5');
  ol.replaceChildren(...top5.map((g) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = `${g.label} `;
    const p = document.createElement('span');
    p.className = 'p';
    p.textContent = `${(100 * g.prob).toFixed(1)}%`;
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, 100 * g.prob)}%`;
    li.append(name, p, bar);
    return li;
  }));
}

// The square the network crops, over the displayed input.
function drawOverlay(t) {
  const el = state.source === 'still' ? $('still') : $('video');
  const o = $('overlay');
  const w = el.clientWidth, h = el.clientHeight;
  if (!w || !h) return;
  o.width = w;
  o.height = h;
  const ctx = o.getContext('2d');
  ctx.clearRect(0, 0, w, h);
  const sx = w / t.orig_w, sy = h / t.orig_h;
  ctx.strokeStyle = '#ffd600';
  ctx.lineWidth = 2;
  ctx.strokeRect(t.crop[0] * sx, t.crop[1] * sy, t.crop[2] * sx, t.crop[3] * sy);
}

// ---------------------------------------------------------------- units

$('grid').addEventListener('click', (ev) => {
  const ch = cellAt(ev);
  if (ch !== null) selectUnit(ch);
});
// The unit number on hover, for grids too fine to print it in every cell.
$('grid').addEventListener('mousemove', (ev) => {
  const ch = cellAt(ev);
  const t = ch === null ? '' : `unit ${ch} of ${state.geom.c}: click for its top images`;
  if (ev.target.title !== t) ev.target.title = t;
});

let unitRequest = 0;
async function selectUnit(u) {
  state.unit = u;
  const pane = $('unit-pane');
  pane.hidden = false;
  $('unit-body').hidden = false;
  $('unit-title').textContent = `${state.layer} · unit ${u}`;
  $('top9').replaceChildren();
  $('concept-rows').replaceChildren();
  $('unit-labels').textContent = '';
  $('unit-concepts').hidden = true;
  $('unit-hints').hidden = true;
  $('unit-notes').textContent = 'loading…';
  history.replaceState(null, '', `#${new URLSearchParams({ layer: state.layer, unit: u })}`);
  if (state.last) draw();
  // A still is sent again for the new unit's projection (live sources send anyway).
  $('proj-note').textContent = '';
  if (state.source === 'still' && $('proj-mode').value) sendStill();
  const mine = ++unitRequest;
  let rep;
  try {
    rep = await getJson(`/api/unit/${encodeURIComponent(state.layer)}/${u}`);
  } catch (e) {
    if (mine === unitRequest) $('unit-notes').textContent = e.message;
    return;
  }
  if (mine !== unitRequest) return;
  $('unit-pane').classList.toggle('dead', !!rep.never_fires);
  $('filter-fig').hidden = !rep.filter;
  if (rep.filter) $('filter').src = rep.filter;
  $('top9').replaceChildren(...rep.top.map((t) => {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.alt = `#${t.rank} ${t.path}`;
    if (t.crop) img.src = t.crop;
    const cap = document.createElement('figcaption');
    cap.textContent = `#${t.rank} ${t.value.toFixed(2)} ${t.path}`;
    fig.title = `${t.path}\npeak ${t.value.toFixed(3)} at (${t.y}, ${t.x}); click to use as input`;
    fig.append(img, cap);
    fig.addEventListener('click', () => useIndexed(t.image_id, t.path));
    return fig;
  }));
  showConcepts(rep);
  $('unit-notes').textContent = rep.notes.join(' · ');
  pane.dataset.unit = String(u);
}

// The unit's best concepts, the labels of its top images, the classifier hint.
function showConcepts(rep) {
  const cell = (text) => {
    const td = document.createElement('td');
    td.textContent = text;
    return td;
  };
  $('concept-rows').replaceChildren(...rep.concepts.map((c) => {
    const tr = document.createElement('tr');
    tr.classList.toggle('detector', c.detector);
    const name = cell(c.concept);
    name.title = `${c.images} images; click to pick it below`;
    name.addEventListener('click', () => pickConcept(c.concept));
    tr.append(name, cell(c.ap.toFixed(3)), cell(c.auroc.toFixed(3)), cell(`${c.top9}/9`),
      cell(c.detector ? 'detector' : ''));
    return tr;
  }));
  const labels = rep.labels.map((l) => `${l.set}/${l.concept} ${l.count}/${rep.top.length}`);
  $('unit-labels').textContent = labels.length ? `labels of the top ${rep.top.length}: ${labels.join(' · ')}` : '';
  $('unit-concepts').hidden = rep.concepts.length === 0 && labels.length === 0;
  const hints = rep.hints || [];
  $('unit-hints').textContent = `pushes most through the classifier: ${hints.map((h) => `${h.name} (${h.push >= 0 ? '+' : ''}${h.push.toFixed(3)})`).join(', ')}`;
  $('unit-hints').title = "the classifier's weight from this unit times its mean peak; needs no labels";
  $('unit-hints').hidden = hints.length === 0;
}

// Switches the layer as the layer picker does: no unit selected, a still re-sent.
function setLayer(name) {
  state.layer = name;
  state.unit = null;
  $('layer').value = name;
  $('unit-body').hidden = true;
  $('unit-pane').hidden = state.concepts.length === 0;
  history.replaceState(null, '', `#${new URLSearchParams({ layer: name })}`);
  if (state.source === 'still') sendStill();
}

// Selects `unit` of `layer` as if the user had picked the layer, then the channel.
function goToUnit(layer, unit) {
  const l = state.layers.find((x) => x.name === layer);
  if (!l || !Number.isInteger(unit) || unit < 0 || unit >= l.c) return false;
  if (layer !== state.layer) setLayer(layer);
  selectUnit(unit);
  return true;
}

function pickConcept(name) {
  const i = state.concepts.findIndex((c) => c.concept === name);
  if (i >= 0) $('concept').value = String(i);
}

// The concept picker: each concept with its best unit; empty without labels.
async function loadConcepts() {
  let list;
  try {
    list = await getJson('/api/concepts');
  } catch (e) {
    status(`concepts unavailable: ${e.message}`, true);
    return;
  }
  state.concepts = list.concepts.filter((c) => c.best);
  const d = list.detector;
  $('concepts-rule').textContent = `(best AP above the concept's share first; detector: AP ≥ ${d.ap}, AUROC ≥ ${d.auroc})`;
  const sel = $('concept');
  sel.replaceChildren(...state.concepts.map((c, i) => {
    const o = document.createElement('option');
    o.value = String(i);
    const b = c.best;
    o.textContent = `${c.concept} (${b.layer} #${b.unit}, AP ${b.ap.toFixed(2)}${b.detector ? ', detector' : ''})`;
    Object.assign(o.dataset, { layer: b.layer, unit: b.unit });
    return o;
  }));
  $('concept-go').hidden = state.concepts.length === 0;
  if (state.concepts.length) $('unit-pane').hidden = false;
  document.body.dataset.concepts = String(state.concepts.length);
}

$('concept-best').addEventListener('click', () => {
  const c = state.concepts[Number($('concept').value)];
  if (c) goToUnit(c.best.layer, c.best.unit);
});

// ---------------------------------------------------------------- setup

async function init() {
  let info;
  try {
    info = await getJson('/api/layers');
  } catch (e) {
    status(`cannot reach the server: ${e.message}`, true);
    return;
  }
  $('model').textContent = info.model + (info.db ? ` · ${info.images} indexed images` : ' · no database');
  state.layers = info.layers;
  state.layer = info.default;
  const sel = $('layer');
  for (const l of info.layers) {
    const o = document.createElement('option');
    o.value = l.name;
    o.textContent = `${l.name}  ${l.c}×${l.h}×${l.w}${l.indexed ? '  ★' : ''}`;
    sel.append(o);
  }
  sel.value = state.layer;
  sel.title = '★: indexed in the database (top-9 available)';
  sel.addEventListener('change', () => setLayer(sel.value));
  $('proj-mode').addEventListener('change', () => {
    const c = $('proj');
    c.getContext('2d').clearRect(0, 0, c.width, c.height);
    $('proj-note').textContent = '';
    if (state.source === 'still' && state.unit !== null) sendStill();
  });
  if (info.db) {
    // Not awaited: scoring a large index takes a while, the inputs need not wait.
    loadConcepts();
    const list = await getJson('/api/images?limit=1000').catch(() => ({ images: [] }));
    const ds = $('src-dataset');
    for (const im of list.images) {
      const o = document.createElement('option');
      o.value = String(im.id);
      o.textContent = im.path;
      ds.append(o);
    }
    ds.disabled = list.images.length === 0;
    ds.addEventListener('change', () => {
      if (ds.value) useIndexed(ds.value, ds.selectedOptions[0].textContent);
    });
  }
  $('src-camera').addEventListener('click', useCamera);
  $('src-video').addEventListener('change', (e) => {
    const f = e.target.files[0];
    if (f) useVideoFile(f);
    e.target.value = '';
  });
  $('src-image').addEventListener('change', (e) => {
    const f = e.target.files[0];
    if (f) useStill(f, f.name, e.target);
    e.target.value = '';
  });
  showInput(null);
  const want = new URLSearchParams(location.hash.slice(1));
  if (want.has('layer') && state.layers.some((l) => l.name === want.get('layer'))) {
    if (!want.has('unit') || !goToUnit(want.get('layer'), Number(want.get('unit')))) setLayer(want.get('layer'));
  }
  document.body.dataset.ready = '1';
}

init();
