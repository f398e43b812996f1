/** What every experiment needs: caches built once through the server's job manager, and one training process per (recipe, seed). */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createServices, resolveConfig, type JobRequestInput } from '@distillate/server';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const TRAIN_BIN = join(ROOT, 'trainer', 'bin', 'distillate-train.js');

/** Build (or find: a cache hit) every cache; returns each job's cache key, in order. Teachers come from `models` (default models/). */
export async function buildCaches(jobs: readonly JobRequestInput[], models = join(ROOT, 'models')): Promise<string[]> {
  for (const j of jobs)
    if (!existsSync(join(models, `${j.teacher}.onnx`))) throw new Error(`${join(models, `${j.teacher}.onnx`)} is missing (see models/README.md)`);
  const services = await createServices(
    resolveConfig({ models, data: join(ROOT, 'data'), cache: join(ROOT, 'cache'), logLevel: 'warn' }, {}),
    pino({ level: 'warn' }),
  );
  await services.jobs.init();
  const keys: string[] = [];
  try {
    for (const req of jobs) {
      const t0 = performance.now();
      const job = await services.jobs.create(req);
      await services.jobs.idle();
      const done = services.jobs.get(job.id);
      if (done.state !== 'succeeded') throw new Error(`${req.type} ${req.teacher} over ${req.dataset}: ${done.state} ${done.error?.message ?? ''}`);
      console.log(
        `${req.type} ${req.teacher} over ${req.dataset}${req.views === undefined ? '' : ` (${req.views.count} views)`}: ${done.cacheHit === true ? 'cache hit' : `built in ${((performance.now() - t0) / 1000).toFixed(0)} s`} ${done.cacheKey!.slice(0, 12)}…`,
      );
      keys.push(done.cacheKey!);
    }
  } finally {
    await services.teachers.releaseAll();
  }
  return keys;
}

/**
 * Train one recipe at one seed in its own process, unless `<out>/<name>/run.json` already exists.
 * A run that was stopped part way (the experiments killed) continues from its last checkpoint.
 */
export async function trainRecipe(o: { recipe: string; seed: number; name: string; out: string; set?: readonly string[] }): Promise<void> {
  if (existsSync(join(o.out, o.name, 'run.json'))) return;
  const resume = existsSync(join(o.out, o.name, 'checkpoint.json')) ? ['--resume'] : [];
  const args = [
    TRAIN_BIN,
    '--recipe',
    join(ROOT, 'recipes', o.recipe),
    '--seed',
    String(o.seed),
    '--name',
    o.name,
    '--out',
    o.out,
    ...resume,
    ...(o.set ?? []).flatMap((s) => ['--set', s]),
  ];
  const t0 = performance.now();
  await new Promise<void>((ok, fail) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`${o.name}: distillate-train exited ${code}: ${err.trim().split('\n').at(-1)}`))));
  });
  console.log(`${o.name}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

/** Run tasks `parallel` at a time, results in order. */
export async function pool<T>(tasks: (() => Promise<T>)[], parallel: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await tasks[i]!();
      }
    }),
  );
  return results;
}

/** Two-sided 95 % quantiles of Student's t at these degrees of freedom. */
const T95: readonly (readonly [number, number])[] = [
  [1, 12.706],
  [2, 4.303],
  [3, 3.182],
  [4, 2.776],
  [5, 2.571],
  [6, 2.447],
  [7, 2.365],
  [8, 2.306],
  [9, 2.262],
  [10, 2.228],
  [15, 2.131],
  [20, 2.086],
  [30, 2.042],
  [40, 2.021],
  [60, 2.0],
  [120, 1.98],
];
/** The quantile at the largest tabulated df not above `df` (so the interval errs wide). */
const t95 = (df: number): number => [...T95].reverse().find(([d]) => d <= df)?.[1] ?? Number.NaN;

/** Mean and 95 % t half-width of paired differences. */
export function pairedInterval(d: readonly number[]): { mean: number; half: number } {
  return { mean: mean(d), half: t95(d.length - 1) * (std(d) / Math.sqrt(d.length)) };
}

export const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / v.length;
/** Sample standard deviation (n − 1). */
export const std = (v: readonly number[]) => (v.length < 2 ? 0 : Math.sqrt(v.reduce((a, b) => a + (b - mean(v)) ** 2, 0) / (v.length - 1)));

/** Replace the text between two markers in BENCHMARKS.md (or append a section). */
export function replaceSection(doc: string, begin: string, end: string, body: string, heading: string): string {
  const section = `${begin}\n${body}\n${end}`;
  const a = doc.indexOf(begin);
  const b = doc.indexOf(end);
  return a >= 0 && b > a ? doc.slice(0, a) + section + doc.slice(b + end.length) : `${doc.trimEnd()}\n\n${heading}\n\n${section}\n`;
}

/** Mean paired difference (row − baseline, same seeds) in points, with a 95 % t interval; '' without pairs. */
export function pairedDelta(a: ReadonlyMap<number, number> | undefined, b: ReadonlyMap<number, number> | undefined): string {
  if (a === undefined || b === undefined) return '';
  const d = [...a].filter(([seed]) => b.has(seed)).map(([seed, v]) => (v - b.get(seed)!) * 100);
  if (d.length < 2) return d.length === 1 ? `${d[0]! >= 0 ? '+' : ''}${d[0]!.toFixed(2)} (one seed)` : '';
  const { mean: m, half } = pairedInterval(d);
  return `${m >= 0 ? '+' : ''}${m.toFixed(2)} [${(m - half).toFixed(2)}, ${(m + half).toFixed(2)}] (${d.length} pairs)`;
}
