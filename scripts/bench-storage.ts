/**
 * npm run bench:storage [-- --json] [-- --quick]
 *
 * 1. Bytes per row on disk for a 1,000-class teacher (generated Gaussian logits): dense float32,
 *    dense float16, and top-k (logits + int32 indices + logsumexp) for k = 5, 10 and 20, each
 *    against the raw float32 logits (4 B × classes).
 * 2. What top-k costs in accuracy: the same student distilled with KD alone (no labels, so the
 *    teacher's distribution is all it learns from) from dense and top-k caches of the shipped
 *    Fashion-MNIST teacher, at T = 4, on the first 10,000 training images; mean test accuracy
 *    over 3 seeds. Skipped when Fashion-MNIST is not installed.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { FASHION_MNIST_DEBIAN_DIR, LogitCacheWriter, headDataset, importFashionMnist, mulberry32, runCli, type StorageInput } from '@distillate/shared';
import { createServices, resolveConfig, type JobRequestInput } from '@distillate/server';
import { parseRecipe, train } from '@distillate/trainer';
import { log, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

const ROOT = resolve(import.meta.dirname, '..');
const TEACHER = 'fmnist-teacher';

const label = (s: StorageInput) =>
  s.mode === 'dense' ? `dense_${s.dtype === 'float16' ? 'f16' : 'f32'}` : s.mode === 'topk' ? `topk_${s.k}` : `sampled_${s.n}`;

async function bytesPerRow(dir: string, rowsN: number, classes: number, storage: StorageInput): Promise<number> {
  const rand = mulberry32(7);
  const w = await LogitCacheWriter.open({
    root: join(dir, 'bytes'),
    teacher: { name: 'generated-1000', sha256: 'a'.repeat(64), classes: Array.from({ length: classes }, (_, i) => `c${i}`) },
    dataset: { fingerprint: 'b'.repeat(64), rows: rowsN },
    preprocessing: '',
    temperature: 1,
    storage,
    fsync: false,
  });
  const batch = 1000;
  for (let start = 0; start < rowsN; start += batch) {
    const n = Math.min(batch, rowsN - start);
    const ids = Int32Array.from({ length: n }, (_, i) => start + i);
    // Box–Muller normals, scaled like a confident classifier's logits.
    const logits = Float32Array.from({ length: n * classes }, () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()) * 3);
    await w.append({ ids, logits });
  }
  const m = await w.finish();
  return m.shards.reduce((a, s) => a + s.bytes, 0) / rowsN;
}

async function main(opts: { json: boolean; quick: boolean; dir: string }): Promise<void> {
  const dir = resolve(opts.dir);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const rows: BenchRow[] = [];

  const classes = 1000;
  const rowsN = opts.quick ? 200 : 20_000;
  log(opts.json, `bytes per row: ${rowsN} rows × ${classes} classes`);
  const raw = { name: `raw float32 logits (${classes} × 4 B)`, value: classes * 4 };
  for (const s of [
    { mode: 'dense', dtype: 'float32' },
    { mode: 'dense', dtype: 'float16' },
    { mode: 'topk', k: 5 },
    { mode: 'topk', k: 10 },
    { mode: 'topk', k: 20 },
  ] as StorageInput[]) {
    rows.push(row('storage', `bytes_per_row_${label(s)}`, await bytesPerRow(dir, rowsN, classes, s), 'B', raw));
  }

  if (!existsSync(join(FASHION_MNIST_DEBIAN_DIR, 'train-images-idx3-ubyte.gz'))) {
    log(opts.json, `Fashion-MNIST not in ${FASHION_MNIST_DEBIAN_DIR}: skipping the top-k accuracy study (apt-get install dataset-fashion-mnist)`);
  } else {
    const trainRows = opts.quick ? 500 : 10_000;
    const seeds = opts.quick ? 1 : 3;
    const epochs = opts.quick ? 1 : 3;
    for (const d of ['models', 'data', 'cache', 'fmnist']) await mkdir(join(dir, d), { recursive: true });
    for (const ext of ['onnx', 'json']) await copyFile(join(ROOT, 'models', `${TEACHER}.${ext}`), join(dir, 'models', `${TEACHER}.${ext}`));
    const { train: full, test } = await importFashionMnist(FASHION_MNIST_DEBIAN_DIR, join(dir, 'fmnist'));
    await headDataset(full.path, join(dir, 'data', 'train.arrow'), trainRows);
    const testPath = opts.quick ? (await headDataset(test.path, join(dir, 'data', 'test.arrow'), 500)).path : test.path;
    const services = await createServices(
      resolveConfig({ models: join(dir, 'models'), data: join(dir, 'data'), cache: join(dir, 'cache'), provider: 'cpu', logLevel: 'silent' }, {}),
      pino({ level: 'silent' }),
    );
    await services.jobs.init();
    const T = 4;
    const storages: StorageInput[] = [
      { mode: 'dense', dtype: 'float32' },
      { mode: 'dense', dtype: 'float16' },
      { mode: 'topk', k: 1 },
      { mode: 'topk', k: 2 },
      { mode: 'topk', k: 5 },
    ];
    const accuracy: Record<string, number> = {};
    for (const storage of storages) {
      const req: JobRequestInput = { type: 'precompute', teacher: TEACHER, dataset: 'train.arrow', temperature: T, storage };
      const j = await services.jobs.create(req);
      await services.jobs.idle();
      const done = services.jobs.get(j.id);
      if (done.state !== 'succeeded') throw new Error(`precompute ${label(storage)}: ${done.error?.message}`);
      const accs: number[] = [];
      for (let seed = 1; seed <= seeds; seed++) {
        const r = await train(
          parseRecipe({
            name: `${label(storage)}-${seed}`,
            data: { train: join(dir, 'data', 'train.arrow'), test: testPath },
            teachers: [{ cache: join(dir, 'cache', done.cacheKey!) }],
            student: { kind: 'mlp', hidden: [128] },
            distill: { method: 'kd', params: { temperature: T } },
            weights: { ce: 0, kd: 1 },
            schedule: { kind: 'cosine' },
            epochs,
            seed,
            out: join(dir, 'runs'),
          }),
          { skipExport: true },
        );
        accs.push(r.test!.accuracy * 100);
      }
      accuracy[label(storage)] = accs.reduce((a, b) => a + b, 0) / accs.length;
      log(opts.json, `KD only from ${label(storage)} (T = ${T}): ${accuracy[label(storage)]!.toFixed(2)} % (mean of ${seeds})`);
    }
    await services.teachers.releaseAll();
    const dense = { name: `dense f32, same student (mean of ${seeds} seeds)`, value: accuracy['dense_f32']! };
    for (const s of storages.slice(1)) rows.push(row('storage', `kd_only_test_acc_${label(s)}`, accuracy[label(s)]!, '%', dense));
  }
  await rm(dir, { recursive: true, force: true });
  printRows(rows, opts.json);
}

const program = benchProgram('bench-storage', '.bench/storage').action(main);

await runCli(program);
