/** A self-contained HTML report (inline SVG, no scripts or network): curves and calibration. */
import type { ReliabilityBin } from './evaluate.js';

export interface EpochMetrics {
  readonly epoch: number;
  readonly lr: number;
  readonly kdWeight: number;
  readonly loss: Readonly<Record<string, number>>;
  /** Over the epoch's labelled rows; absent when it had none (an unlabelled transfer set). */
  readonly trainAccuracy?: number;
  readonly testAccuracy?: number;
  readonly agreement?: number;
  readonly ece?: number;
  readonly seconds: number;
  readonly samplesPerSecond: number;
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function lineChart(title: string, series: Array<{ name: string; points: Array<[number, number]> }>, yLabel: string): string {
  const W = 460;
  const H = 260;
  const m = { l: 50, r: 10, t: 28, b: 36 };
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return '';
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
  return `<svg width="${W}" height="${H}" role="img" aria-label="${esc(title)}">
  <text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">${esc(title)}</text>
  ${ticks.map((t) => `<line x1="${m.l}" x2="${W - m.r}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/><text x="${m.l - 4}" y="${sy(t) + 4}" text-anchor="end" font-size="10">${t.toPrecision(3)}</text>`).join('')}
  <line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>
  <text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="11">epoch</text>
  <text x="12" y="${H / 2}" transform="rotate(-90 12 ${H / 2})" text-anchor="middle" font-size="11">${esc(yLabel)}</text>
  ${series
    .map((s, i) => {
      const c = COLORS[i % COLORS.length]!;
      const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
      return `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>${s.points.map(([x, y]) => `<circle cx="${sx(x)}" cy="${sy(y)}" r="2.5" fill="${c}"/>`).join('')}<text x="${W - m.r - 4}" y="${m.t + 12 + i * 13}" text-anchor="end" font-size="11" fill="${c}">${esc(s.name)}</text>`;
    })
    .join('')}
</svg>`;
}

function reliabilityChart(bins: readonly ReliabilityBin[], ece: number): string {
  const W = 300;
  const H = 300;
  const m = 40;
  const s = (v: number) => v * (W - 2 * m);
  const bars = bins
    .filter((b) => b.count > 0)
    .map(
      (b) =>
        `<rect x="${m + s(b.lo)}" y="${H - m - s(b.accuracy)}" width="${s(b.hi - b.lo) - 1}" height="${s(b.accuracy)}" fill="#1f77b4" opacity="0.8"><title>${(b.lo * 100).toFixed(0)}–${(b.hi * 100).toFixed(0)}%: ${b.count} samples, accuracy ${(b.accuracy * 100).toFixed(1)}%</title></rect>`,
    )
    .join('');
  return `<svg width="${W}" height="${H}" role="img" aria-label="reliability diagram">
  <text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">Reliability (ECE ${(ece * 100).toFixed(2)}%)</text>
  ${bars}
  <line x1="${m}" y1="${H - m}" x2="${W - m}" y2="${m}" stroke="#d62728" stroke-dasharray="4"/>
  <line x1="${m}" x2="${m}" y1="${m}" y2="${H - m}" stroke="#333"/><line x1="${m}" x2="${W - m}" y1="${H - m}" y2="${H - m}" stroke="#333"/>
  <text x="${W / 2}" y="${H - 10}" text-anchor="middle" font-size="11">confidence</text>
  <text x="12" y="${H / 2}" transform="rotate(-90 12 ${H / 2})" text-anchor="middle" font-size="11">accuracy</text>
</svg>`;
}

export function renderReport(opts: {
  name: string;
  recipe: unknown;
  metrics: readonly EpochMetrics[];
  reliability?: { bins: readonly ReliabilityBin[]; ece: number };
  summary: Readonly<Record<string, string | number>>;
}): string {
  const m = opts.metrics;
  const lossNames = [...new Set(m.flatMap((e) => Object.keys(e.loss)))];
  const loss = lineChart(
    'Training loss by term',
    lossNames.map((n) => ({ name: n, points: m.map((e) => [e.epoch, e.loss[n] ?? NaN] as [number, number]).filter((p) => Number.isFinite(p[1])) })),
    'loss',
  );
  const acc = lineChart(
    'Accuracy',
    [
      { name: 'train', points: m.filter((e) => e.trainAccuracy !== undefined).map((e) => [e.epoch, e.trainAccuracy!] as [number, number]) },
      { name: 'test', points: m.filter((e) => e.testAccuracy !== undefined).map((e) => [e.epoch, e.testAccuracy!] as [number, number]) },
      { name: 'teacher agreement', points: m.filter((e) => e.agreement !== undefined).map((e) => [e.epoch, e.agreement!] as [number, number]) },
    ].filter((s) => s.points.length > 0),
    'fraction',
  );
  const rows = Object.entries(opts.summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(opts.name)} · Distillate run</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #eee}.charts{display:flex;flex-wrap:wrap;gap:24px}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>
</head><body>
<h1>${esc(opts.name)}</h1>
<table>${rows}</table>
<div class="charts">${loss}${acc}${opts.reliability === undefined ? '' : reliabilityChart(opts.reliability.bins, opts.reliability.ece)}</div>
<h2>Epochs</h2>
<table><tr><th>epoch</th><th>lr</th><th>kd weight</th>${lossNames.map((n) => `<th>${esc(n)}</th>`).join('')}<th>train acc</th><th>test acc</th><th>agreement</th><th>ECE</th><th>samples/s</th></tr>
${m.map((e) => `<tr><td>${e.epoch}</td><td>${e.lr.toExponential(2)}</td><td>${e.kdWeight.toFixed(2)}</td>${lossNames.map((n) => `<td>${(e.loss[n] ?? NaN).toFixed(4)}</td>`).join('')}<td>${e.trainAccuracy === undefined ? '' : `${(e.trainAccuracy * 100).toFixed(2)}%`}</td><td>${e.testAccuracy === undefined ? '' : `${(e.testAccuracy * 100).toFixed(2)}%`}</td><td>${e.agreement === undefined ? '' : `${(e.agreement * 100).toFixed(2)}%`}</td><td>${e.ece === undefined ? '' : `${(e.ece * 100).toFixed(2)}%`}</td><td>${e.samplesPerSecond.toFixed(0)}</td></tr>`).join('\n')}
</table>
<h2>Recipe</h2><pre>${esc(JSON.stringify(opts.recipe, null, 2))}</pre>
</body></html>
`;
}
