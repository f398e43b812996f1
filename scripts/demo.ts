/**
 * npm run demo [-- --quick | --full] [--data DIR | --synthetic] [--work DIR]
 * npm run demo -- --lm [--quick]     (the language-model demo: scripts/demo-lm.ts)
 *
 * The whole flow on Fashion-MNIST, in one process: import the data, start the teacher server on
 * a free port, precompute a shipped teacher's logits (fmnist-teacher-ls0) through the HTTP job API,
 * train the same student with KD (recipes/fmnist-kd-sharp.yaml) and from scratch, evaluate both, export the KD student to ONNX, register it with
 * the server and query it, then print a summary table. See README.md#quick-start.
 */
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Presets, SingleBar } from 'cli-progress';
import { Command } from 'commander';
import {
  DatasetReader,
  FASHION_MNIST_CLASSES,
  LogitCacheReader,
  acquireFashionMnist,
  alignDatasetWithCaches,
  headDataset,
  importFashionMnist,
  onnxParameterCount,
  runCli,
  verifyCache,
  writeSyntheticDataset,
} from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { api, precompute } from './demo-http.js';
import { loadRecipe, parseRecipe, predictRunLogits, progressCallbacks, train, type RunResult } from '@distillate/trainer';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** The teacher the KD recipe below was tuned for (no label smoothing; BENCHMARKS.md). */
export const DEMO_TEACHER = 'fmnist-teacher-ls0';
/** The teacher the demo trains for itself with --synthetic. */
const SYNTHETIC_TEACHER = 'synthetic-teacher';
/** The name the demo registers its KD student under. */
const STUDENT_NAME = 'fmnist-student';

export interface DemoOptions {
  /** Directory with the four Fashion-MNIST IDX .gz files. */
  readonly data?: string;
  /** Where the demo writes data, caches, models and runs (default demo-out/). */
  readonly work?: string;
  /** Generated data and a teacher trained on it, instead of Fashion-MNIST. */
  readonly synthetic?: boolean;
  readonly size?: 'quick' | 'default' | 'full';
  readonly log?: (line: string) => void;
}

/** Per size: train/test rows (undefined = all) and epochs (undefined = the recipes' own). */
const SIZES = {
  quick: { trainRows: 2000, testRows: 500, epochs: 1 },
  default: { trainRows: undefined, testRows: undefined, epochs: undefined },
  full: { trainRows: undefined, testRows: undefined, epochs: 30 },
} as const;

export interface ModelRow {
  readonly name: string;
  readonly accuracy: number;
  readonly parameters: number;
  /** ORT CPU latency, median ms: one sample, and a batch of 256. */
  readonly latencyMs: { readonly batch1: number; readonly batch256: number };
  readonly bytes: number;
}

export interface DemoSummary {
  readonly dataset: 'fashion-mnist' | 'synthetic';
  readonly trainRows: number;
  readonly testRows: number;
  readonly cacheDir: string;
  readonly cacheVerified: boolean;
  readonly rows: readonly ModelRow[];
  readonly kd: RunResult;
  readonly scratch: RunResult;
  readonly served: { readonly rows: number; readonly maxAbsDiff: number; readonly top1Agreement: number };
  readonly seconds: number;
}

/** Top-1 accuracy of a cache's logits against the dataset's labels. */
async function cacheAccuracy(datasetPath: string, cacheDir: string): Promise<number> {
  const dataset = await DatasetReader.open(datasetPath);
  const cache = await LogitCacheReader.open(cacheDir);
  const C = cache.manifest.teacher.classes.length;
  let right = 0;
  let rows = 0;
  for await (const b of alignDatasetWithCaches(dataset, [cache])) {
    const t = b.teachers[0]!;
    if (t.kind !== 'dense') throw new Error('expected a dense cache');
    for (let i = 0; i < b.rows; i++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (t.logits[i * C + c]! > t.logits[i * C + best]!) best = c;
      if (best === b.labels[i]) right++;
      rows++;
    }
  }
  return right / rows;
}

/** Median ORT CPU latency of one call, at batch 1 and 256 (after a warm-up). */
export async function ortLatency(model: string, sampleShape: readonly number[]): Promise<{ batch1: number; batch256: number }> {
  const session = await OrtSession.create(model, { provider: 'cpu' });
  try {
    const input = session.inputs[0]!.name;
    const output = session.outputs[0]!.name;
    const D = sampleShape.reduce((a, b) => a * b, 1);
    const time = async (batch: number, runs: number): Promise<number> => {
      const x = Float32Array.from({ length: batch * D }, (_, i) => ((i * 7919) % 255) / 255);
      for (let i = 0; i < 3; i++) await session.run(input, x, [batch, ...sampleShape], output);
      const ms: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        await session.run(input, x, [batch, ...sampleShape], output);
        ms.push(performance.now() - t0);
      }
      ms.sort((a, b) => a - b);
      return ms[Math.floor(ms.length / 2)]!;
    };
    return { batch1: await time(1, 50), batch256: await time(256, 7) };
  } finally {
    await session.release();
  }
}

/**
 * The demo's data: Fashion-MNIST from --data, the user cache, Debian's package or a verified
 * download (shared's acquireFashionMnist); when none of those works the demo stops with one
 * line saying what it tried. Generated data only with --synthetic.
 */
async function prepareData(opts: {
  data?: string;
  synthetic: boolean;
  dir: string;
  size: keyof typeof SIZES;
  log: (line: string) => void;
}): Promise<'fashion-mnist' | 'synthetic'> {
  const { trainRows, testRows } = SIZES[opts.size];
  const full = join(opts.dir, 'full');
  await mkdir(full, { recursive: true });
  let kind: 'fashion-mnist' | 'synthetic';
  if (opts.synthetic) {
    opts.log('--synthetic: a generated 28×28 dataset (not Fashion-MNIST); the demo trains its own teacher on it first');
    await writeSyntheticDataset(join(full, 'train.arrow'), { rows: trainRows ?? 6000, inputShape: [28, 28, 1], classes: 10, seed: 1 });
    await writeSyntheticDataset(join(full, 'test.arrow'), { rows: testRows ?? 1000, inputShape: [28, 28, 1], classes: 10, seed: 2, firstId: 1_000_000 });
    kind = 'synthetic';
  } else {
    const bar = process.stderr.isTTY
      ? new SingleBar({ format: 'download {file} [{bar}] {percentage}% | ETA {eta_formatted}', hideCursor: true }, Presets.shades_classic)
      : undefined;
    let current = '';
    const source = await acquireFashionMnist({
      ...(opts.data === undefined ? {} : { data: opts.data }),
      onProgress: (file, received, total) => {
        if (file !== current) {
          bar?.stop();
          current = file;
          if (total !== undefined) bar?.start(total, 0, { file });
          else opts.log(`downloading ${file}`);
        }
        bar?.update(received, { file });
      },
    });
    bar?.stop();
    const { train, test } = await importFashionMnist(source.dir, full);
    opts.log(`imported Fashion-MNIST (${source.source}: ${source.dir}, sha256 verified): ${train.rows} train, ${test.rows} test images`);
    kind = 'fashion-mnist';
  }
  for (const [split, rows] of [
    ['train', trainRows],
    ['test', testRows],
  ] as const) {
    const out = join(opts.dir, `${split}.arrow`);
    if (rows === undefined) await rename(join(full, `${split}.arrow`), out);
    else await headDataset(join(full, `${split}.arrow`), out, rows);
  }
  await rm(full, { recursive: true });
  return kind;
}

/** --synthetic: a small CNN teacher trained on the generated data, so the demo's table compares something real. */
async function trainSyntheticTeacher(dirs: { data: string; runs: string; models: string }, log: (line: string) => void): Promise<void> {
  const recipe = parseRecipe({
    name: 'synthetic-teacher',
    data: { train: join(dirs.data, 'train.arrow'), test: join(dirs.data, 'test.arrow') },
    out: dirs.runs,
    student: { kind: 'cnn', blocks: [{ filters: 16 }, { filters: 32 }], dense: [64] },
    epochs: 3,
  });
  const r = await train(recipe, progressCallbacks('teacher', log));
  await copyFile(r.onnx!.path, join(dirs.models, `${SYNTHETIC_TEACHER}.onnx`));
  await writeFile(join(dirs.models, `${SYNTHETIC_TEACHER}.json`), `${JSON.stringify({ layout: 'flat' }, null, 2)}\n`);
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoSummary> {
  const t0 = performance.now();
  const log = options.log ?? console.log;
  const size = options.size ?? 'default';
  const work = resolve(options.work ?? 'demo-out');
  const dirs = { data: join(work, 'data'), cache: join(work, 'cache'), models: join(work, 'models'), runs: join(work, 'runs') };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });

  log(`[1/7] data (${size})`);
  const dataset = await prepareData({
    ...(options.data === undefined ? {} : { data: options.data }),
    synthetic: options.synthetic === true,
    dir: dirs.data,
    size,
    log,
  });
  const trainRows = await (await DatasetReader.open(join(dirs.data, 'train.arrow'))).countRows();
  const testRows = await (await DatasetReader.open(join(dirs.data, 'test.arrow'))).countRows();

  log('[2/7] teacher server');
  // The student a previous run registered: the server would load it at boot, and a rescan does
  // not reload a name it has, so this run would serve (and compare against) the old student.
  for (const ext of ['onnx', 'json']) await rm(join(dirs.models, `${STUDENT_NAME}.${ext}`), { force: true });
  const teacher = dataset === 'synthetic' ? SYNTHETIC_TEACHER : DEMO_TEACHER;
  if (dataset === 'synthetic') await trainSyntheticTeacher(dirs, log);
  else for (const ext of ['onnx', 'json']) await copyFile(join(ROOT, 'models', `${DEMO_TEACHER}.${ext}`), join(dirs.models, `${DEMO_TEACHER}.${ext}`));
  const server = await startServer(resolveConfig({ models: dirs.models, data: dirs.data, cache: dirs.cache, port: 0, logLevel: 'warn' }, {}));
  try {
    log(`server listening on ${server.url}`);

    log('[3/7] precompute teacher logits over HTTP (POST /v1/jobs, progress over SSE)');
    const trainJob = await precompute(server, teacher, 'train.arrow', log);
    const testJob = await precompute(server, teacher, 'test.arrow', log);
    const cacheDir = join(dirs.cache, trainJob.cacheKey!);
    const verified = await verifyCache(cacheDir);
    log(`cache ${verified.ok ? 'verifies' : `FAILS verification: ${verified.problems.join('; ')}`} (${cacheDir})`);

    log('[4/7] train the student with KD, then the same student from scratch');
    const epochs = SIZES[size].epochs;
    const common = [
      `data.train=${join(dirs.data, 'train.arrow')}`,
      `data.test=${join(dirs.data, 'test.arrow')}`,
      `out=${dirs.runs}`,
      ...(epochs === undefined ? [] : [`epochs=${epochs}`]),
    ];
    const kdRecipe = await loadRecipe(join(ROOT, 'recipes', 'fmnist-kd-sharp.yaml'), [...common, 'name=demo-kd', `teachers=[{cache: "${cacheDir}"}]`]);
    const kd = await train(kdRecipe, progressCallbacks('kd', log));
    const scratchRecipe = await loadRecipe(join(ROOT, 'recipes', 'fmnist-scratch.yaml'), [
      ...common,
      'name=demo-scratch',
      `student=${JSON.stringify(kdRecipe.student)}`,
    ]);
    const scratch = await train(scratchRecipe, progressCallbacks('scratch', log));

    log('[5/7] evaluate on the test split');
    const teacherAccuracy = await cacheAccuracy(join(dirs.data, 'test.arrow'), join(dirs.cache, testJob.cacheKey!));
    log(
      `teacher ${pct(teacherAccuracy)} · scratch ${pct(scratch.test!.accuracy)} (ECE ${pct(scratch.test!.ece)}) · KD ${pct(kd.test!.accuracy)} (ECE ${pct(kd.test!.ece)})`,
    );

    log('[6/7] register the exported KD student with the server and query it');
    const studentName = STUDENT_NAME;
    await copyFile(kd.onnx!.path, join(dirs.models, `${studentName}.onnx`));
    await writeFile(
      join(dirs.models, `${studentName}.json`),
      `${JSON.stringify({ classes: dataset === 'synthetic' ? undefined : [...FASHION_MNIST_CLASSES], layout: 'flat' }, null, 2)}\n`,
    );
    const { teachers } = await api<{ teachers: string[] }>(server, '/v1/teachers/rescan', { method: 'POST' });
    if (!teachers.includes(studentName)) throw new Error(`rescan did not register ${studentName}`);
    const served = await queryStudent(server, studentName, join(dirs.data, 'test.arrow'), kd.runDir);
    log(
      `served ${served.rows} test images: top-1 equal to the trained model on ${pct(served.top1Agreement)}, max |Δlogit| ${served.maxAbsDiff.toExponential(2)}`,
    );

    log('[7/7] summary');
    const teacherPath = join(dirs.models, `${teacher}.onnx`);
    const row = async (name: string, model: string, accuracy: number, shape: number[]): Promise<ModelRow> => {
      const bytes = await readFile(model);
      return { name, accuracy, parameters: onnxParameterCount(bytes), latencyMs: await ortLatency(model, shape), bytes: bytes.length };
    };
    const rows = [
      await row(`teacher (${teacher})`, teacherPath, teacherAccuracy, dataset === 'synthetic' ? [784] : [1, 28, 28]),
      await row('student, scratch', scratch.onnx!.path, scratch.test!.accuracy, [784]),
      await row('student, KD', kd.onnx!.path, kd.test!.accuracy, [784]),
    ];
    if (dataset === 'synthetic') log('SYNTHETIC DATA (--synthetic): generated images, not Fashion-MNIST; the table checks the mechanics, not distillation');
    for (const line of summaryTable(rows)) log(line);
    log(`report: ${join(kd.runDir, 'report.html')}`);
    const seconds = (performance.now() - t0) / 1000;
    log(`done in ${seconds.toFixed(0)} s (${dataset}, ${trainRows} train / ${testRows} test rows, ${kdRecipe.epochs} epochs)`);
    return { dataset, trainRows, testRows, cacheDir, cacheVerified: verified.ok, rows, kd, scratch, served, seconds };
  } finally {
    await server.close();
  }
}

/** Query the served student with test images and compare with the trained run's own model (student.onnx, or the TF.js model of a tfjs-engine run). */
async function queryStudent(server: RunningServer, name: string, testPath: string, runDir: string): Promise<DemoSummary['served']> {
  const reader = await DatasetReader.open(testPath);
  const { scale, offset } = reader.info.scaling;
  const D = reader.inputSize;
  let x: Float32Array | undefined;
  for await (const b of reader.batches()) {
    const n = Math.min(64, b.rows);
    x = Float32Array.from(b.inputs.subarray(0, n * D), (v) => v * scale + offset);
    break;
  }
  const rows = x!.length / D;
  const body = await api<{ logits: number[][] }>(server, `/v1/teachers/${name}/logits`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: Array.from(x!), shape: [rows, D] }),
  });
  const local = await predictRunLogits(runDir, x!, rows);
  const C = body.logits[0]!.length;
  let maxAbsDiff = 0;
  let same = 0;
  for (let i = 0; i < rows; i++) {
    const remote = body.logits[i]!;
    let a = 0;
    let b = 0;
    for (let c = 0; c < C; c++) {
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(remote[c]! - local[i * C + c]!));
      if (remote[c]! > remote[a]!) a = c;
      if (local[i * C + c]! > local[i * C + b]!) b = c;
    }
    if (a === b) same++;
  }
  return { rows, maxAbsDiff, top1Agreement: same / rows };
}

const pct = (v: number) => `${(v * 100).toFixed(2)}%`;

export function summaryTable(rows: readonly ModelRow[]): string[] {
  const header = ['model', 'test acc', 'params', 'size', 'ORT b=1', 'ORT b=256'];
  const body = rows.map((r) => [
    r.name,
    pct(r.accuracy),
    r.parameters.toLocaleString('en-US'),
    `${(r.bytes / 1e6).toFixed(2)} MB`,
    `${r.latencyMs.batch1.toFixed(3)} ms`,
    `${r.latencyMs.batch256.toFixed(2)} ms`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(header), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line)];
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const program = new Command('demo')
    .description('Fashion-MNIST end to end: import, serve, precompute over HTTP, train KD + scratch, export, register, query')
    .option('--data <dir>', "directory with the four Fashion-MNIST IDX .gz files (default: the user cache, Debian's package, or a verified download)")
    .option('--synthetic', 'run every stage on generated data (with a teacher trained on it), not Fashion-MNIST')
    .option('--work <dir>', 'output directory', 'demo-out')
    .option('--quick', 'every stage on a slice of the data (2,000 train / 500 test rows, 1 epoch)')
    .option('--full', 'the long version (all rows, 30 epochs)')
    .option('--lm', 'the language-model demo instead (Brown corpus; same as npm run demo:lm)')
    .action(async (f: { data?: string; work: string; quick?: boolean; full?: boolean; synthetic?: boolean; lm?: boolean }) => {
      if (f.quick === true && f.full === true) throw new Error('--quick and --full exclude each other');
      if (f.lm === true) {
        const { runLmDemo } = await import('./demo-lm.js');
        await runLmDemo({ work: join(f.work, 'lm'), quick: f.quick === true });
        return;
      }
      if (f.synthetic === true && f.data !== undefined) throw new Error('--synthetic and --data exclude each other');
      await runDemo({
        ...(f.data === undefined ? {} : { data: f.data }),
        synthetic: f.synthetic === true,
        work: f.work,
        size: f.quick === true ? 'quick' : f.full === true ? 'full' : 'default',
      });
    });
  await runCli(program);
}
