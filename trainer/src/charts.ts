/**
 * Inline SVG charts for the run reports (report.ts, compare.ts): no scripts, no network. Axes
 * carry ticks with labels, the legend sits outside the plot area, and curves that lie on top
 * of each other are said to.
 */

export interface Series {
  readonly name: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
  /** Its colour; by default the palette's, in order. Comparisons give each run one colour in every chart. */
  readonly color?: string;
}

export const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Round tick positions covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const base = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * base).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** Whole-number ticks for an epoch axis: every epoch, or every k-th when there are many. */
function epochTicks(lo: number, hi: number): number[] {
  const step = Math.max(1, Math.ceil((hi - lo) / 10));
  const ticks: number[] = [];
  for (let t = Math.ceil(lo); t <= hi; t += step) ticks.push(t);
  return ticks;
}

const label = (v: number): string => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(4))));

/** Pairs of series with the same points (to a relative 1e-6): the second is drawn dashed and the chart says so. */
export function coinciding(series: readonly Series[]): Array<[string, string]> {
  const same = (a: Series, b: Series) =>
    a.points.length > 0 &&
    a.points.length === b.points.length &&
    a.points.every(([x, y], i) => x === b.points[i]![0] && Math.abs(y - b.points[i]![1]) <= 1e-6 * Math.max(1, Math.abs(y)));
  const pairs: Array<[string, string]> = [];
  series.forEach((a, i) => series.slice(i + 1).forEach((b) => same(a, b) && pairs.push([a.name, b.name])));
  return pairs;
}

/**
 * A line chart over epochs. `percent`: y values are fractions, labelled as percentages.
 * `notes`: lines under the chart (a coincidence note is added by itself).
 */
export function lineChart(o: { title: string; series: readonly Series[]; yLabel: string; percent?: boolean; notes?: readonly string[] }): string {
  const series = o.series.map((s, i) => ({ ...s, color: s.color ?? COLORS[i % COLORS.length]! })).filter((s) => s.points.length > 0);
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return '';
  const legendWidth = Math.min(200, 28 + 7 * Math.max(...series.map((s) => s.name.length)));
  const W = 420 + legendWidth;
  const H = 280;
  const m = { l: 58, r: legendWidth + 12, t: 30, b: 44 };
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const xHi = x1 > x0 ? x1 : x0 + 1;
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-12 * Math.max(1, Math.abs(y0))) [y0, y1] = [y0 - 0.5 * Math.max(1e-3, Math.abs(y0)), y1 + 0.5 * Math.max(1e-3, Math.abs(y1))];
  const yTicks = niceTicks(y0, y1);
  y0 = Math.min(y0, yTicks[0]!);
  y1 = Math.max(y1, yTicks.at(-1)!);
  const sx = (x: number) => m.l + ((x - x0) / (xHi - x0)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const plotRight = W - m.r;
  const pairs = coinciding(series);
  const dashed = new Set(pairs.map(([, b]) => b));
  const notes = [...pairs.map(([a, b]) => `${a} and ${b} coincide (drawn dashed): the other terms add nothing here.`), ...(o.notes ?? [])];
  const fmtY = (v: number) => (o.percent === true ? `${Number((v * 100).toPrecision(4))}%` : label(v));
  const yAxis = yTicks
    .map(
      (t) =>
        `<line class="grid" x1="${m.l}" x2="${plotRight}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/><text class="ytick" x="${m.l - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end" font-size="10">${fmtY(t)}</text>`,
    )
    .join('');
  const xAxis = epochTicks(x0, x1)
    .map(
      (t) =>
        `<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${H - m.b}" y2="${H - m.b + 4}" stroke="#333"/><text class="xtick" x="${sx(t).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle" font-size="10">${t}</text>`,
    )
    .join('');
  const lines = series
    .map((s) => {
      const c = s.color;
      const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
      const dash = dashed.has(s.name) ? ' stroke-dasharray="6 4"' : '';
      return `<polyline class="series" data-name="${esc(s.name)}" fill="none" stroke="${c}" stroke-width="2"${dash} points="${pts}"/>${s.points.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${c}"><title>${esc(s.name)}, epoch ${x}: ${fmtY(y)}</title></circle>`).join('')}`;
    })
    .join('');
  const legend = series
    .map((s, i) => {
      const c = s.color;
      const y = m.t + 8 + i * 16;
      const dash = dashed.has(s.name) ? ' stroke-dasharray="6 4"' : '';
      return `<g class="legend-item"><line x1="${plotRight + 14}" x2="${plotRight + 34}" y1="${y}" y2="${y}" stroke="${c}" stroke-width="2"${dash}/><text x="${plotRight + 40}" y="${y + 4}" font-size="11">${esc(s.name)}</text></g>`;
    })
    .join('');
  return `<figure class="chart"><svg width="${W}" height="${H}" role="img" aria-label="${esc(o.title)}" data-plot="${m.l},${m.t},${plotRight},${H - m.b}">
  <text x="${(m.l + plotRight) / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(o.title)}</text>
  ${yAxis}${xAxis}
  <line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${plotRight}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>
  <text x="${(m.l + plotRight) / 2}" y="${H - 8}" text-anchor="middle" font-size="11">epoch</text>
  <text x="14" y="${(m.t + H - m.b) / 2}" transform="rotate(-90 14 ${(m.t + H - m.b) / 2})" text-anchor="middle" font-size="11">${esc(o.yLabel)}</text>
  ${lines}<g class="legend">${legend}</g>
</svg>${notes.map((n) => `<figcaption class="note">${esc(n)}</figcaption>`).join('')}</figure>`;
}
