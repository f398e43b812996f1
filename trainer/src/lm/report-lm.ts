/** report.html of a language-model run: loss terms and test bits per byte per epoch, a table, the recipe. */
import { esc, lineChart } from '../charts.js';
import { STYLE } from '../report.js';
import type { LmEpochMetrics } from './train-lm.js';

export function renderLmReport(o: {
  name: string;
  recipe: unknown;
  metrics: readonly LmEpochMetrics[];
  summary: Readonly<Record<string, string | number>>;
}): string {
  const m = o.metrics;
  const names = [...new Set(m.flatMap((e) => Object.keys(e.loss)))];
  const loss = lineChart({
    title: 'training loss (mean per epoch)',
    yLabel: 'nats per token',
    series: names.map((n) => ({ name: n, points: m.map((e) => [e.epoch, e.loss[n] ?? Number.NaN] as const) })),
  });
  const tested = m.filter((e) => e.test !== undefined);
  const bpb =
    tested.length === 0
      ? ''
      : lineChart({
          title: 'test bits per byte (lower is better)',
          yLabel: 'bits per byte',
          series: [{ name: 'test', points: tested.map((e) => [e.epoch, e.test!.bitsPerByte] as const) }],
        });
  const rows = Object.entries(o.summary)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  const pct = (v: number | undefined): string => (v === undefined ? '' : `${(v * 100).toFixed(2)}%`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(o.name)} · Distillate language-model run</title>
<style>${STYLE}</style>
</head><body>
<h1>${esc(o.name)}</h1>
<table>${rows}</table>
<div class="charts">${loss}${bpb}</div>
<h2>Epochs</h2>
<table><tr><th>epoch</th><th>lr</th>${names.map((n) => `<th>${esc(n)}</th>`).join('')}<th>test bits/byte</th><th>test perplexity</th><th>agreement</th><th>tokens/s</th></tr>
${m
  .map(
    (e) =>
      `<tr><td>${e.epoch}</td><td>${e.lr.toExponential(2)}</td>${names.map((n) => `<td>${(e.loss[n] ?? Number.NaN).toFixed(4)}</td>`).join('')}<td>${e.test?.bitsPerByte.toFixed(4) ?? ''}</td><td>${e.test?.perplexity.toFixed(2) ?? ''}</td><td>${pct(e.test?.agreement)}</td><td>${e.tokensPerSecond.toFixed(0)}</td></tr>`,
  )
  .join('\n')}
</table>
<h2>Recipe</h2><pre>${esc(JSON.stringify(o.recipe, null, 2))}</pre>
</body></html>
`;
}
