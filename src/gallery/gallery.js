// neurodex gallery: arrow keys between pages (links marked rel=prev/next/up), the
// layer page's jump box and sorting, and the unit pages' heat maps, drawn from the
// hex map on each canvas. No libraries, no fetches: works from file://.

// matplotlib's viridis at five stops, linearly interpolated.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
}

// Each cell: its colour at an opacity growing with the value (as the CLI's heat tiles).
function drawHeat(c) {
  const hex = c.dataset.map, n = c.width * c.height;
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(c.width, c.height);
  for (let i = 0; i < n; i++) {
    const k = parseInt(hex.substr(2 * i, 2), 16) / 255;
    const [r, g, b] = viridis(k);
    img.data.set([r, g, b, Math.round(255 * (0.2 + 0.6 * k))], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function keys() {
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.target.closest('input,select,textarea')) return;
    const rel = { ArrowLeft: 'prev', ArrowRight: 'next', ArrowUp: 'up' }[e.key];
    const a = rel && document.querySelector(`a[rel~="${rel}"]`);
    if (a) {
      e.preventDefault();
      location.href = a.href;
    }
  });
}

function jumpBox() {
  const form = document.getElementById('jump');
  if (!form) return;
  const input = document.getElementById('jump-unit');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const u = Number(input.value);
    if (!Number.isInteger(u) || u < 0 || u > Number(input.max)) {
      input.setCustomValidity(`units are 0 to ${input.max}`);
      input.reportValidity();
      return;
    }
    location.href = `${form.dataset.base}${u}.html`;
  });
  input.addEventListener('input', () => input.setCustomValidity(''));
}

// Reorders the unit cards; units without data go last.
function sorting() {
  const sel = document.getElementById('sort');
  const box = document.getElementById('units');
  if (!sel || !box) return;
  const apply = () => {
    const key = sel.value;
    const val = (el) => (el.dataset[key] === '' ? -Infinity : Number(el.dataset[key]));
    const cards = [...box.children];
    cards.sort((a, b) => (key === 'unit'
      ? Number(a.dataset.unit) - Number(b.dataset.unit)
      : val(b) - val(a) || Number(a.dataset.unit) - Number(b.dataset.unit)));
    box.append(...cards);
    document.body.dataset.sorted = key;
  };
  sel.addEventListener('change', apply);
  if (sel.value !== 'unit') apply();
}

keys();
jumpBox();
sorting();
document.querySelectorAll('canvas[data-map]').forEach(drawHeat);
document.body.dataset.ready = '1';
