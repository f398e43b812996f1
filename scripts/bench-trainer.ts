/**
 * npm run bench:trainer [-- --json] [-- --quick]
 *
 * Training throughput (samples/s, batch 128, KD loss, Adam) of the MLP 784-512-256-10 and a
 * small CNN (conv3×3×32, pool, conv3×3×64, pool, dense 128, dense 10), end to end through
 * `train()` (data path included), on the ORT engine (CPU EP, all cores) and on the TF.js engine
 * (wasm), next to PyTorch CPU on the same models and loss in a bare step loop: PyTorch 2.x when
 * the bench's `python3` imports it (pip), and Debian's python3-torch with its reference BLAS and
 * with OpenBLAS for that process alone (libopenblas0-pthread). Also the ORT MLP step's GFLOP/s
 * against the machine's sgemm peak (a 2048² torch.mm), and the trainer's peak RSS (ORT engine)
 * streaming 1×, 10× and 20× the rows (fresh processes). Rates are medians of 5 epochs after a
 * warm-up epoch; RSS is the median of 5 fresh processes per size.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, LogitCacheWriter, writeSyntheticDataset, runCli } from '@distillate/shared';
import { parseRecipe, train } from '@distillate/trainer';
import { childPeakRssMb, printPeakRssKb } from './bench/peak-rss.js';
import { log, median, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

/** A 28×28 dataset plus a dense 10-class cache of pseudo-random teacher logits. */
async function makeData(dir: string, rows: number): Promise<{ data: string; cache: string }> {
  await mkdir(dir, { recursive: true });
  const data = join(dir, `d${rows}.arrow`);
  const { fingerprint } = await writeSyntheticDataset(data, { rows, inputShape: [28, 28, 1], classes: 10, batchRows: 4096 });
  const w = await LogitCacheWriter.open({
    root: join(dir, 'cache'),
    teacher: { name: 'bench', sha256: 'e'.repeat(64), classes: Array.from({ length: 10 }, (_, i) => `class-${i}`) },
    dataset: { fingerprint, rows },
    preprocessing: '',
    temperature: 4,
    storage: { mode: 'dense' },
    fsync: false,
  });
  for await (const b of await DatasetReader.open(data)) {
    const z = Float32Array.from({ length: b.rows * 10 }, (_, i) => Math.sin(i * 0.7 + Number(b.ids[0])) * 5);
    await w.append({ ids: b.ids, logits: z });
  }
  const m = await w.finish();
  return { data, cache: join(dir, 'cache', m.key) };
}

/** Median samples/s over epochs 2..runs+1 (epoch 1 is the warm-up). */
async function trainRate(
  dir: string,
  d: { data: string; cache: string },
  student: object,
  name: string,
  runs: number,
  engine: 'ort' | 'tfjs',
): Promise<number> {
  const recipe = parseRecipe({
    name,
    data: { train: d.data },
    teachers: [{ cache: d.cache }],
    student,
    distill: { method: 'kd', params: { temperature: 4 } },
    epochs: runs + 1,
    batchSize: 128,
    out: join(dir, 'runs'),
    shuffleBuffer: 2048,
    engine,
    ...(engine === 'ort' ? { executionProvider: 'cpu' } : { backend: 'wasm' }),
  });
  const r = await train(recipe, { skipExport: true });
  return median(r.metrics.slice(1).map((m) => m.samplesPerSecond));
}

/** FLOPs of one MLP 784-512-256-10 train step per sample: forward, and dW of every layer plus dX of layers 2 and 3 (no input gradient). */
const MLP_FLOP_PER_SAMPLE = 2 * (784 * 512 + 512 * 256 + 256 * 10) * 2 + 2 * (512 * 256 + 256 * 10);

interface TorchPeer {
  readonly name: string;
  readonly mlp: number;
  readonly cnn: number;
  readonly sgemm: number | null;
}

function torchPeer(python: string, label: string, spec: object, env: NodeJS.ProcessEnv = process.env): TorchPeer | undefined {
  const r = spawnSync(python, [join(import.meta.dirname, 'bench', 'torch_train.py'), JSON.stringify(spec)], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`torch peer (${python}) failed: ${r.stderr.trim().split('\n').at(-1)}`);
  const t = JSON.parse(r.stdout.trim()) as { mlp: number; cnn: number; torch: string; sgemm_gflops: number | null };
  return { name: `torch ${t.torch} CPU${label}`, mlp: t.mlp, cnn: t.cnn, sgemm: t.sgemm_gflops };
}

const imports = (python: string, module: string): boolean => spawnSync(python, ['-c', `import ${module}`], { encoding: 'utf8' }).status === 0;

const BLAS_DIRS = {
  reference: ['/usr/lib/x86_64-linux-gnu/blas', '/usr/lib/x86_64-linux-gnu/lapack'],
  openblas: ['/usr/lib/x86_64-linux-gnu/openblas-pthread'],
} as const;

async function main(opts: { json: boolean; quick: boolean; dir: string; childTrain?: string }): Promise<void> {
  if (opts.childTrain !== undefined) {
    // Peak RSS of one training epoch over the given dataset (tiny MLP: the data path dominates).
    const [data, cache] = opts.childTrain.split(',');
    const recipe = parseRecipe({
      name: 'rss',
      data: { train: data! },
      teachers: [{ cache: cache! }],
      student: { kind: 'mlp', hidden: [16] },
      distill: { method: 'kd' },
      epochs: 1,
      batchSize: 256,
      out: join(opts.dir, 'rss-runs'),
      engine: 'ort',
      executionProvider: 'cpu',
    });
    await train(recipe, { skipExport: true });
    await printPeakRssKb();
    return;
  }
  const dir = opts.dir;
  await rm(dir, { recursive: true, force: true });
  const rows: BenchRow[] = [];
  const mlpRows = opts.quick ? 256 : 128 * 40;
  // The TF.js CNN trains at under 100 samples/s, so it gets fewer rows; the ORT engine's CNN gets
  // the MLP's, so that per-epoch costs (shuffling, the last short group of steps) weigh alike.
  const cnnRows = opts.quick ? 256 : 128 * 10;
  const ortCnnRows = opts.quick ? 256 : 128 * 40;
  log(opts.json, `training: MLP on ${mlpRows} rows, CNN on ${ortCnnRows} rows (ORT engine) and ${cnnRows} (TF.js), batch 128, KD loss, Adam`);
  const mlpData = await makeData(join(dir, 'mlp'), mlpRows);
  const cnnData = await makeData(join(dir, 'cnn'), cnnRows);
  const ortCnnData = await makeData(join(dir, 'ort-cnn'), ortCnnRows);
  const runs = opts.quick ? 1 : 5;
  log(opts.json, 'ORT engine, CPU EP');
  const ortMlp = await trainRate(dir, mlpData, { kind: 'mlp', hidden: [512, 256] }, 'ort-mlp', runs, 'ort');
  const ortCnn = await trainRate(dir, ortCnnData, { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] }, 'ort-cnn', runs, 'ort');
  log(opts.json, 'TF.js engine, wasm backend');
  const mlp = await trainRate(dir, mlpData, { kind: 'mlp', hidden: [512, 256] }, 'mlp', runs, 'tfjs');
  const cnn = await trainRate(dir, cnnData, { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] }, 'cnn', runs, 'tfjs');

  const spec = { threads: 2, runs, mlp_batches: opts.quick ? 2 : 40, cnn_batches: opts.quick ? 2 : 10, sgemm: true };
  const peers: TorchPeer[] = [];
  if (imports('python3', 'torch')) {
    const p = torchPeer('python3', ' (pip)', spec);
    if (p !== undefined && !p.name.startsWith('torch 1.')) peers.push(p);
    log(opts.json, `PyTorch from the bench's python3: ${p?.name ?? 'none'}`);
  } else {
    log(opts.json, "the bench's python3 has no torch: no PyTorch 2.x peer (pip install torch)");
  }
  if (imports('/usr/bin/python3', 'torch')) {
    for (const [blas, dirs] of Object.entries(BLAS_DIRS)) {
      if (!existsSync(dirs[0])) {
        log(opts.json, `no ${blas} BLAS in ${dirs[0]}: skipped${blas === 'openblas' ? ' (apt-get install libopenblas0-pthread)' : ''}`);
        continue;
      }
      log(opts.json, `PyTorch CPU, same models and loss (Debian python3-torch, ${blas} BLAS for this process)`);
      const p = torchPeer('/usr/bin/python3', `, Debian, ${blas} BLAS`, spec, { ...process.env, LD_LIBRARY_PATH: dirs.join(':') });
      if (p !== undefined) peers.push(p);
    }
  } else {
    log(opts.json, 'python3-torch not installed: no Debian PyTorch peer (apt-get install python3-torch)');
  }
  for (const p of peers) {
    rows.push(row('trainer', 'ort_train_mlp_784_512_256_10', ortMlp, 'samples/s', { name: p.name, value: p.mlp }));
    rows.push(row('trainer', 'ort_train_cnn_32_64_128', ortCnn, 'samples/s', { name: p.name, value: p.cnn }));
  }
  for (const p of peers) {
    rows.push(row('trainer', 'train_mlp_784_512_256_10', mlp, 'samples/s', { name: p.name, value: p.mlp }));
    rows.push(row('trainer', 'train_cnn_32_64_128', cnn, 'samples/s', { name: p.name, value: p.cnn }));
  }
  if (peers.length === 0) {
    rows.push(row('trainer', 'ort_train_mlp_784_512_256_10', ortMlp, 'samples/s'), row('trainer', 'ort_train_cnn_32_64_128', ortCnn, 'samples/s'));
    rows.push(row('trainer', 'train_mlp_784_512_256_10', mlp, 'samples/s'), row('trainer', 'train_cnn_32_64_128', cnn, 'samples/s'));
  }
  const peak = peers.map((p) => p.sgemm ?? 0).reduce((a, b) => Math.max(a, b), 0);
  const gflops = (ortMlp * MLP_FLOP_PER_SAMPLE) / 1e9;
  rows.push(
    row('trainer', 'ort_train_mlp_gflops', gflops, 'GFLOP/s', peak > 0 ? { name: 'sgemm peak (2048² torch.mm, best BLAS here)', value: peak } : undefined),
  );

  // 1×, 10× and 20×: V8 and the wasm heap take a while to reach their working size, so the
  // 10×→20× step is the one that shows whether memory keeps growing with the data.
  const base = opts.quick ? 1000 : 6000;
  log(opts.json, `trainer peak RSS (ORT engine) streaming ${base}, ${base * 10} and ${base * 20} rows (fresh processes, median of ${runs})`);
  const sizes = [1, 10, 20].map((f) => ({ f, d: makeData(join(dir, `rss${f}`), base * f) }));
  const rss = (d: { data: string; cache: string }) => childPeakRssMb(import.meta.filename, ['--dir', dir, '--child-train', `${d.data},${d.cache}`]);
  const peakRss: Record<number, number[]> = { 1: [], 10: [], 20: [] };
  for (let i = 0; i < runs; i++) for (const { f, d } of sizes) peakRss[f]!.push(rss(await d));
  rows.push(
    row('trainer', 'ort_train_peak_rss_10x_dataset', median(peakRss[10]!), 'MB', { name: 'ort_train_peak_rss_1x_dataset', value: median(peakRss[1]!) }),
  );
  rows.push(
    row('trainer', 'ort_train_peak_rss_20x_dataset', median(peakRss[20]!), 'MB', { name: 'ort_train_peak_rss_10x_dataset', value: median(peakRss[10]!) }),
  );
  await rm(dir, { recursive: true, force: true });
  printRows(rows, opts.json);
}

const program = benchProgram('bench-trainer', '.bench/trainer')
  .option('--child-train <data,cache>', '(internal) train one epoch and print peak RSS in KB')
  .action(main);

await runCli(program);
