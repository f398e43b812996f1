/** A self-contained HTML report (inline SVG, no scripts or network): curves and calibration. */
import { esc, lineChart } from './charts.js';
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

function reliabilityChart(bins: readonly ReliabilityBin[], ece: number): string {
  const W = 330;
  const H = 330;
  const m = { l: 52, r: 14, t: 30, b: 44 };
  const side = W - m.l - m.r;
  const sx = (v: number) => m.l + v * side;
  const sy = (v: number) => H - m.b - v * (H - m.t - m.b);
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1];
  const bars = bins
    .filter((b) => b.count > 0)
    .map(
      (b) =>
        `<rect x="${sx(b.lo).toFixed(1)}" y="${sy(b.accuracy).toFixed(1)}" width="${(sx(b.hi) - sx(b.lo) - 1).toFixed(1)}" height="${(sy(0) - sy(b.accuracy)).toFixed(1)}" fill="#1f77b4" opacity="0.8"><title>${(b.lo * 100).toFixed(0)}–${(b.hi * 100).toFixed(0)}%: ${b.count} samples, accuracy ${(b.accuracy * 100).toFixed(1)}%</title></rect>`,
    )
    .join('');
  const axes = ticks
    .map(
      (t) =>
        `<text class="xtick" x="${sx(t).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle" font-size="10">${t * 100}%</text><text class="ytick" x="${m.l - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end" font-size="10">${t * 100}%</text><line x1="${m.l}" x2="${W - m.r}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/>`,
    )
    .join('');
  return `<figure class="chart"><svg width="${W}" height="${H}" role="img" aria-label="reliability diagram" data-plot="${m.l},${m.t},${W - m.r},${H - m.b}">
  <text x="${(m.l + W - m.r) / 2}" y="18" text-anchor="middle" font-weight="bold">Reliability (ECE ${(ece * 100).toFixed(2)}%)</text>
  ${axes}${bars}
  <line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(1)}" y2="${sy(1)}" stroke="#d62728" stroke-dasharray="4"/>
  <line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>
  <text x="${(m.l + W - m.r) / 2}" y="${H - 8}" text-anchor="middle" font-size="11">confidence</text>
  <text x="14" y="${(m.t + H - m.b) / 2}" transform="rotate(-90 14 ${(m.t + H - m.b) / 2})" text-anchor="middle" font-size="11">accuracy</text>
</svg><figcaption class="legend"><span style="color:#1f77b4">■</span> accuracy of the test rows in each confidence bin · <span style="color:#d62728">- - -</span> perfect calibration</figcaption></figure>`;
}

/** The charts of one run's epochs: loss by term, and accuracy with teacher agreement. */
export function runCharts(m: readonly EpochMetrics[]): { loss: string; accuracy: string; lossNames: string[] } {
  const lossNames = [...new Set(m.flatMap((e) => Object.keys(e.loss)))];
  const loss = lineChart({
    title: 'Training loss by term',
    series: lossNames.map((n) => ({ name: n, points: m.map((e) => [e.epoch, e.loss[n] ?? NaN] as const).filter((p) => Number.isFinite(p[1])) })),
    yLabel: 'loss',
  });
  const accuracy = lineChart({
    title: 'Accuracy',
    series: [
      { name: 'train', points: m.filter((e) => e.trainAccuracy !== undefined).map((e) => [e.epoch, e.trainAccuracy!] as const) },
      { name: 'test', points: m.filter((e) => e.testAccuracy !== undefined).map((e) => [e.epoch, e.testAccuracy!] as const) },
      { name: 'teacher agreement', points: m.filter((e) => e.agreement !== undefined).map((e) => [e.epoch, e.agreement!] as const) },
    ],
    yLabel: 'fraction of rows',
    percent: true,
  });
  return { loss, accuracy, lossNames };
}

export const STYLE =
  'body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}th,td{text-align:left;padding:2px 10px;border-bottom:1px solid #eee}.charts{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}figure{margin:0}figcaption{font-size:12px;color:#555;max-width:560px}pre{background:#f6f6f6;padding:1em;overflow:auto}';

export function renderReport(opts: {
  name: string;
  recipe: unknown;
  metrics: readonly EpochMetrics[];
  reliability?: { bins: readonly ReliabilityBin[]; ece: number };
  summary: Readonly<Record<string, string | number>>;
}): string {
  const m = opts.metrics;
  const { loss, accuracy: acc, lossNames } = runCharts(m);
  const rows = Object.entries(opts.summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(opts.name)} · Distillate run</title>
<style>${STYLE}</style>
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
