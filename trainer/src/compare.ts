/**
 * `distillate-train report runs/a runs/b … --out compare.html`: several runs in one page. Their
 * curves overlaid (each loss term, test accuracy, teacher agreement), a summary table (method,
 * parameters, accuracy, ECE, samples/s) and each run's recipe as a difference from the first.
 * Read from what every run directory holds: recipe.json, metrics.jsonl and, once finished,
 * run.json.
 */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { COLORS, esc, lineChart } from './charts.js';
import { STYLE, type EpochMetrics } from './report.js';

const EpochSchema = z
  .object({
    epoch: z.number(),
    lr: z.number(),
    kdWeight: z.number(),
    loss: z.record(z.string(), z.number()),
    trainAccuracy: z.number().optional(),
    testAccuracy: z.number().optional(),
    agreement: z.number().optional(),
    ece: z.number().optional(),
    seconds: z.number(),
    samplesPerSecond: z.number(),
  })
  .loose();

const RunJsonSchema = z
  .object({
    parameters: z.number().optional(),
    test: z.object({ accuracy: z.number(), ece: z.number() }).loose().optional(),
    engine: z.object({ name: z.string(), device: z.string() }).loose().optional(),
  })
  .loose();

export interface RunRecord {
  readonly dir: string;
  readonly name: string;
  readonly recipe: Readonly<Record<string, unknown>>;
  readonly metrics: readonly EpochMetrics[];
  /** run.json, when the run has finished. */
  readonly result?: z.infer<typeof RunJsonSchema>;
}

/** One run directory; a run still training (no run.json yet) is read as far as it got. */
export async function readRun(dir: string): Promise<RunRecord> {
  const text = (file: string) =>
    readFile(join(dir, file), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
  const recipeText = await text('recipe.json');
  const metricsText = await text('metrics.jsonl');
  if (recipeText === undefined || metricsText === undefined) throw new Error(`${dir}: not a run directory (no recipe.json and metrics.jsonl)`);
  const metrics = metricsText
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      const parsed = EpochSchema.safeParse(JSON.parse(l));
      if (!parsed.success) throw new Error(`${join(dir, 'metrics.jsonl')}: line ${i + 1}: ${parsed.error.issues[0]?.message ?? 'bad epoch'}`);
      return parsed.data as EpochMetrics;
    });
  const recipe = z.record(z.string(), z.unknown()).parse(JSON.parse(recipeText));
  const runText = await text('run.json');
  const result = runText === undefined ? undefined : RunJsonSchema.parse(JSON.parse(runText));
  // Named by its directory (runs/<name>, or an experiment's <row>-s<seed>): unique where recipe names repeat.
  return { dir, name: basename(dir), recipe, metrics, ...(result === undefined ? {} : { result }) };
}

/** Leaves of a JSON value by dotted path (arrays as whole values). */
function leaves(v: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) leaves(x, prefix === '' ? k : `${prefix}.${k}`, out);
  } else out.set(prefix, JSON.stringify(v));
  return out;
}

/** Where `recipe` differs from `base`: every leaf added, changed or left out (the run's name and output directory aside). */
export function recipeDiff(base: unknown, recipe: unknown): Array<{ path: string; base: string | undefined; value: string | undefined }> {
  const a = leaves(base);
  const b = leaves(recipe);
  const paths = [...new Set([...a.keys(), ...b.keys()])].filter((p) => p !== 'name' && p !== 'out').sort();
  return paths.filter((p) => a.get(p) !== b.get(p)).map((p) => ({ path: p, base: a.get(p), value: b.get(p) }));
}

const median = (v: readonly number[]): number => {
  const s = [...v].sort((x, y) => x - y);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const pct = (v: number | undefined) => (v === undefined ? '' : `${(v * 100).toFixed(2)}%`);

/** The figures of the summary table, one object per run (also what a test checks against metrics.jsonl). */
export function summarize(run: RunRecord): {
  run: string;
  method: string;
  student: string;
  parameters?: number;
  testAccuracy?: number;
  ece?: number;
  samplesPerSecond: number;
} {
  const last = [...run.metrics].reverse();
  const distill = run.recipe['distill'] as { method?: string } | undefined;
  const student = run.recipe['student'] as { kind?: string } | undefined;
  const testAccuracy = run.result?.test?.accuracy ?? last.find((e) => e.testAccuracy !== undefined)?.testAccuracy;
  const ece = run.result?.test?.ece ?? last.find((e) => e.ece !== undefined)?.ece;
  return {
    run: run.name,
    method: distill?.method ?? '',
    student: student?.kind ?? '',
    ...(run.result?.parameters === undefined ? {} : { parameters: run.result.parameters }),
    ...(testAccuracy === undefined ? {} : { testAccuracy }),
    ...(ece === undefined ? {} : { ece }),
    // Epoch 1 includes the warm-up: the median of the rest, when there is a rest.
    samplesPerSecond: median(run.metrics.slice(run.metrics.length > 1 ? 1 : 0).map((e) => e.samplesPerSecond)),
  };
}

export function renderComparison(runs: readonly RunRecord[], title = 'Distillate runs compared'): string {
  if (runs.length === 0) throw new Error('report: give at least one run directory');
  const names = runs.map((r) => r.name);
  if (new Set(names).size !== names.length) throw new Error(`report: two runs share a name (${names.join(', ')}); runs are told apart by name`);
  const terms = [...new Set(runs.flatMap((r) => r.metrics.flatMap((e) => Object.keys(e.loss))))];
  const overlay = (pick: (e: EpochMetrics) => number | undefined) =>
    runs.map((r, i) => ({
      name: r.name,
      color: COLORS[i % COLORS.length]!,
      points: r.metrics.flatMap((e) => (pick(e) === undefined ? [] : [[e.epoch, pick(e)!] as const])),
    }));
  const charts = [
    ...terms.map((t) => lineChart({ title: `Loss: ${t}`, series: overlay((e) => e.loss[t]), yLabel: t })),
    lineChart({ title: 'Test accuracy', series: overlay((e) => e.testAccuracy), yLabel: 'test accuracy', percent: true }),
    lineChart({ title: 'Teacher agreement', series: overlay((e) => e.agreement), yLabel: 'agreement', percent: true }),
  ].join('');
  const rows = runs
    .map((r, i) => {
      const s = summarize(r);
      const diff = i === 0 ? '(the first run)' : recipeDiff(runs[0]!.recipe, r.recipe).map((d) => `${d.path}: ${d.base ?? '—'} → ${d.value ?? '—'}`);
      return `<tr class="run"><td>${esc(s.run)}</td><td>${esc(s.method)}</td><td>${esc(s.student)}</td><td>${s.parameters?.toLocaleString('en-US') ?? ''}</td><td class="acc">${pct(s.testAccuracy)}</td><td class="ece">${pct(s.ece)}</td><td class="sps">${Number.isFinite(s.samplesPerSecond) ? s.samplesPerSecond.toFixed(0) : ''}</td><td class="diff">${typeof diff === 'string' ? esc(diff) : diff.length === 0 ? 'same recipe' : diff.map((d) => `<code>${esc(d)}</code>`).join('<br>')}</td></tr>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>${STYLE}</style></head><body>
<h1>${esc(title)}</h1>
<table class="summary"><tr><th>run</th><th>method</th><th>student</th><th>parameters</th><th>test accuracy</th><th>test ECE</th><th>samples/s (median, after epoch 1)</th><th>recipe against the first run</th></tr>
${rows}
</table>
<div class="charts">${charts}</div>
<p>Runs: ${runs.map((r) => `<code>${esc(r.dir)}</code>`).join(', ')}</p>
</body></html>
`;
}
