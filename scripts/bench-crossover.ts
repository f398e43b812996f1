/**
 * npm run bench:crossover [-- --json] [-- --quick]
 *
 * The cache's reason to exist: N students distilled from one precompute, against online
 * distillation, where the same teacher ONNX runs inside the training loop on every batch of
 * every student. Same student (MLP 784-128-10), recipe (KD, T = 4, Adam, batch 128), epochs
 * and data in both; only the teacher source differs (recipe `teachers: [{ cache }]` vs
 * `[{ onnx }]`). Offline time for N students = the precompute job + N trainings; online = N
 * trainings. Students are trained one after another, as on one small machine; the totals for
 * N = 1 and 4 are the first 1 and 4 of the 16. The crossover is the smallest N at which the
 * offline total is at most the online one, from the per-student medians.
 */
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { writeSyntheticDataset, runCli } from '@distillate/shared';
import { createServices, resolveConfig } from '@distillate/server';
import { parseRecipe, train } from '@distillate/trainer';
import { log, median, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

const ROOT = resolve(import.meta.dirname, '..');
const TEACHER = 'fmnist-teacher';

async function main(opts: { json: boolean; quick: boolean; dir: string }): Promise<void> {
  const rowsN = opts.quick ? 256 : 5000;
  const epochs = opts.quick ? 1 : 2;
  const precomputeRuns = opts.quick ? 1 : 5;
  const students = 16;
  const dir = resolve(opts.dir);
  await rm(dir, { recursive: true, force: true });
  for (const d of ['models', 'data', 'cache']) await mkdir(join(dir, d), { recursive: true });
  for (const ext of ['onnx', 'json']) await copyFile(join(ROOT, 'models', `${TEACHER}.${ext}`), join(dir, 'models', `${TEACHER}.${ext}`));
  await writeSyntheticDataset(join(dir, 'data', 'train.arrow'), { rows: rowsN, inputShape: [28, 28, 1], classes: 10, batchRows: 4096 });
  log(opts.json, `teacher models/${TEACHER}.onnx, ${rowsN} rows of 28×28, student MLP 784-128-10, ${epochs} epoch(s) per student`);

  // The precompute job, as the server runs it (fsynced cache); median of runs after a warm-up.
  const services = await createServices(
    resolveConfig({ models: join(dir, 'models'), data: join(dir, 'data'), cache: join(dir, 'cache'), provider: 'cpu', logLevel: 'silent' }, {}),
    pino({ level: 'silent' }),
  );
  await services.jobs.init();
  let cacheKey = '';
  const precompute = async (): Promise<number> => {
    await rm(join(dir, 'cache'), { recursive: true, force: true });
    await mkdir(join(dir, 'cache', '.jobs'), { recursive: true });
    const t0 = performance.now();
    const j = await services.jobs.create({ type: 'precompute', teacher: TEACHER, dataset: 'train.arrow' });
    await services.jobs.idle();
    const done = services.jobs.get(j.id);
    if (done.state !== 'succeeded') throw new Error(`precompute ${done.state}: ${done.error?.message}`);
    cacheKey = done.cacheKey!;
    return (performance.now() - t0) / 1000;
  };
  await precompute();
  const precomputeTimes: number[] = [];
  for (let i = 0; i < precomputeRuns; i++) precomputeTimes.push(await precompute());
  await services.teachers.releaseAll();
  const P = median(precomputeTimes);
  log(opts.json, `precompute: ${P.toFixed(2)} s (median of ${precomputeRuns})`);

  const base = {
    data: { train: join(dir, 'data', 'train.arrow') },
    student: { kind: 'mlp', hidden: [128] },
    distill: { method: 'kd', params: { temperature: 4 } },
    epochs,
    batchSize: 128,
    out: join(dir, 'runs'),
  };
  const trainOnce = async (name: string, seed: number, teachers: object[]): Promise<number> => {
    const t0 = performance.now();
    await train(parseRecipe({ ...base, name, seed, teachers }), { skipExport: true });
    return (performance.now() - t0) / 1000;
  };
  // Warm-up (backend start, first-call compilation) for both paths, not counted.
  await trainOnce('warm-offline', 0, [{ cache: join(dir, 'cache', cacheKey) }]);
  await trainOnce('warm-online', 0, [{ onnx: join(dir, 'models', `${TEACHER}.onnx`) }]);
  const offline: number[] = [];
  const online: number[] = [];
  for (let s = 1; s <= students; s++) {
    // Interleaved, so that drift in the machine's speed hits both paths alike.
    offline.push(await trainOnce(`offline-${s}`, s, [{ cache: join(dir, 'cache', cacheKey) }]));
    online.push(await trainOnce(`online-${s}`, s, [{ onnx: join(dir, 'models', `${TEACHER}.onnx`) }]));
    log(opts.json, `student ${s}/${students}: offline ${offline.at(-1)!.toFixed(2)} s, online ${online.at(-1)!.toFixed(2)} s`);
  }
  const sum = (v: number[], n: number) => v.slice(0, n).reduce((a, b) => a + b, 0);
  const rows: BenchRow[] = [];
  for (const n of [1, 4, 16]) {
    rows.push(
      row('crossover', `students_${n}_precompute_plus_train_s`, P + sum(offline, n), 's', {
        name: 'online distillation (teacher in the loop)',
        value: sum(online, n),
      }),
    );
  }
  const perOffline = median(offline);
  const perOnline = median(online);
  rows.push(row('crossover', 'per_student_train_from_cache_s', perOffline, 's', { name: 'per student, online', value: perOnline }));
  // Smallest N with P + N·offline ≤ N·online; none if online is not slower per student.
  const crossover = perOnline > perOffline ? Math.max(1, Math.ceil(P / (perOnline - perOffline))) : Number.POSITIVE_INFINITY;
  if (Number.isFinite(crossover)) rows.push(row('crossover', 'crossover_students', crossover, 'students'));
  else log(opts.json, 'no crossover: online distillation is not slower per student here');
  rows.push(row('crossover', 'speedup_at_16_students', sum(online, 16) / (P + sum(offline, 16)), '×'));
  await rm(dir, { recursive: true, force: true });
  printRows(rows, opts.json);
}

const program = benchProgram('bench-crossover', '.bench/crossover').action(main);

await runCli(program);
