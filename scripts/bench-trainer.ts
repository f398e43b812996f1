/**
 * npm run bench:trainer [-- --json] [-- --quick] [-- --pairs N]
 *
 * Training throughput (samples/s, batch 128, KD loss (T = 4) + CE, Adam) of the MLP
 * 784-512-256-10 and a small CNN (conv3×3×32, pool, conv3×3×64, pool, dense 128, dense 10), end
 * to end through `train()` (data path included) on the ORT engine (CPU EP, every core), against
 * PyTorch 2.x CPU (the bench's `python3`, from pip) on the same models and loss in a bare step
 * loop, in three configurations: Adam at its defaults, Adam(fused=True), and fused Adam with the
 * model and loss under torch.compile. The two sides run in turns (ORT, each torch configuration,
 * ORT, …; `--pairs`, default 3, per model), torch in a fresh process per pair, warmed up (and
 * compiled) before it is timed; each ratio is the median of the pairs' ratios, with their range, and the
 * `_vs_best` row compares against the configuration fastest here. Also: the ORT runs' CPU use over
 * their timed epochs (% of one core), the MLP's GFLOP/s against the sgemm peak (a 2048²
 * torch.mm), the TF.js engine (wasm), Debian's python3-torch 1.13 with its reference BLAS and with
 * OpenBLAS when installed, and the trainer's peak RSS (ORT engine) streaming 1×, 10× and 20× the
 * rows (fresh processes). ORT rates are medians of 5 epochs after a warm-up epoch; RSS is the
 * median of 5 fresh processes per size.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { runCli } from '@distillate/shared';
import { parseRecipe, train } from '@distillate/trainer';
import { childPeakRssMb, printPeakRssKb } from './bench/peak-rss.js';
import { makeData } from './bench/synthetic-data.js';
import { log, median, pairedRow, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

/** One train() run: the median samples/s over epochs 2..runs+1 (epoch 1 is the warm-up), and the process's CPU use over those epochs (% of one core). */
async function trainRate(
  dir: string,
  d: { data: string; cache: string },
  student: object,
  name: string,
  runs: number,
  engine: 'ort' | 'tfjs',
): Promise<{ rate: number; cpuPercent: number }> {
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
  let from: { cpu: NodeJS.CpuUsage; t: number } | undefined;
  let busy = 0;
  let wall = 0;
  const r = await train(recipe, {
    skipExport: true,
    onEpochStart: () => (from = { cpu: process.cpuUsage(), t: performance.now() }),
    onEpochEnd: (m) => {
      if (m.epoch === 1 || from === undefined) return;
      const c = process.cpuUsage(from.cpu);
      busy += (c.user + c.system) / 1000;
      wall += performance.now() - from.t;
    },
  });
  return { rate: median(r.metrics.slice(1).map((m) => m.samplesPerSecond)), cpuPercent: (100 * busy) / wall };
}

/** FLOPs of one MLP 784-512-256-10 train step per sample: forward, and dW of every layer plus dX of layers 2 and 3 (no input gradient). */
const MLP_FLOP_PER_SAMPLE = 2 * (784 * 512 + 512 * 256 + 256 * 10) * 2 + 2 * (512 * 256 + 256 * 10);

/** PyTorch's configurations, as a practitioner would set them (torch_train.py). */
const TORCH_CONFIGS = { adam: 'Adam', fused: 'Adam(fused=True)', 'fused+compile': 'Adam(fused=True) + torch.compile' } as const;
type TorchConfig = keyof typeof TORCH_CONFIGS;

/** torch_train.py --serve: one long-lived PyTorch process, asked for one timing at a time, so that its timings interleave with ours. */
class TorchServer {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  #stderr = '';
  private constructor(python: string) {
    this.#child = spawn(python, [join(import.meta.dirname, 'bench', 'torch_train.py'), '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stderr.on('data', (d: Buffer) => (this.#stderr = (this.#stderr + d.toString()).slice(-4000)));
    this.#lines = createInterface({ input: this.#child.stdout })[Symbol.asyncIterator]();
  }
  static async start(python: string, threads: number): Promise<{ server: TorchServer; version: string }> {
    const server = new TorchServer(python);
    const r = (await server.ask({ threads })) as { torch: string };
    return { server, version: r.torch };
  }
  async ask(cmd: object): Promise<Record<string, number | string>> {
    this.#child.stdin.write(`${JSON.stringify(cmd)}\n`);
    const line = await this.#lines.next();
    if (line.done === true) throw new Error(`torch peer exited: ${this.#stderr.trim().split('\n').at(-1) ?? ''}`);
    return JSON.parse(line.value) as Record<string, number | string>;
  }
  async rate(model: 'mlp' | 'cnn', config: TorchConfig, batches: number): Promise<number> {
    return (await this.ask({ model, config, batches }))['rate'] as number;
  }
  /**
   * End the peer and wait until its process has gone: PyTorch's exit (and torch.compile's
   * worker processes) took the cores for a while, and the next ORT run of the turns started
   * while it did — the bench measured the two at once.
   */
  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = once(this.#child, 'exit');
    this.#child.stdin.end();
    await exited;
  }
}

interface TorchPeer {
  readonly name: string;
  readonly mlp: number;
  readonly cnn: number;
}

/** Debian's python3-torch (1.13), one shot, its default Adam: the BLAS comparison rows. */
function debianTorchPeer(label: string, spec: object, env: NodeJS.ProcessEnv): TorchPeer {
  const r = spawnSync('/usr/bin/python3', [join(import.meta.dirname, 'bench', 'torch_train.py'), JSON.stringify(spec)], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`torch peer (/usr/bin/python3) failed: ${r.stderr.trim().split('\n').at(-1)}`);
  const t = JSON.parse(r.stdout.trim()) as { mlp: number; cnn: number; torch: string };
  return { name: `torch ${t.torch} CPU${label}`, mlp: t.mlp, cnn: t.cnn };
}

const imports = (python: string, module: string): boolean => spawnSync(python, ['-c', `import ${module}`], { encoding: 'utf8' }).status === 0;

const BLAS_DIRS = {
  reference: ['/usr/lib/x86_64-linux-gnu/blas', '/usr/lib/x86_64-linux-gnu/lapack'],
  openblas: ['/usr/lib/x86_64-linux-gnu/openblas-pthread'],
} as const;

const STUDENTS = {
  mlp: { kind: 'mlp', hidden: [512, 256] },
  cnn: { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] },
} as const;
const METRIC = { mlp: 'mlp_784_512_256_10', cnn: 'cnn_32_64_128' } as const;

async function main(opts: { json: boolean; quick: boolean; dir: string; pairs: number; childTrain?: string }): Promise<void> {
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
  const threads = availableParallelism();
  const ortRows = opts.quick ? 256 : 128 * 40;
  // The TF.js CNN trains at under 100 samples/s, so it gets fewer rows.
  const tfjsCnnRows = opts.quick ? 256 : 128 * 10;
  const data = { mlp: await makeData(join(dir, 'mlp'), ortRows), cnn: await makeData(join(dir, 'cnn'), ortRows) };
  const tfjsCnnData = await makeData(join(dir, 'tfjs-cnn'), tfjsCnnRows);
  const runs = opts.quick ? 1 : 5;
  const pairs = opts.quick ? 1 : opts.pairs;

  // The ORT engine against PyTorch 2.x (the bench's python3), in turns: ORT, then each torch
  // configuration, `pairs` times per model. Every ratio is the median of the pairs' ratios. Each
  // pair gets a fresh torch process: its eager CNN ran at one of two speeds per process here
  // (1.3–1.7k or 3.3–4.2k samples/s, steady within a process), so one long-lived process would
  // stand for one of them.
  const found = spawnSync('python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  const python = found.status === 0 && !found.stdout.startsWith('1.') ? 'python3' : undefined;
  if (python === undefined)
    log(opts.json, `the bench's python3 has ${found.status === 0 ? `torch ${found.stdout.trim()}` : 'no torch'}: no PyTorch 2.x peer (pip install torch)`);
  let version: string | undefined;
  const configs = Object.keys(TORCH_CONFIGS) as TorchConfig[];
  const ortCpu: Record<'mlp' | 'cnn', number[]> = { mlp: [], cnn: [] };
  const ortRates: Record<'mlp' | 'cnn', number[]> = { mlp: [], cnn: [] };
  let peak = 0;
  for (const model of ['mlp', 'cnn'] as const) {
    const batches = model === 'mlp' ? (opts.quick ? 2 : 40) : opts.quick ? 2 : 20;
    const torchRates = Object.fromEntries(configs.map((c) => [c, [] as number[]])) as Record<TorchConfig, number[]>;
    for (let p = 0; p < pairs; p++) {
      log(opts.json, `${model}: pair ${p + 1}/${pairs}: ORT engine (${ortRows} rows, ${runs} epochs after a warm-up), then PyTorch (a fresh process)`);
      const ort = await trainRate(dir, data[model], STUDENTS[model], `ort-${model}`, runs, 'ort');
      ortRates[model].push(ort.rate);
      ortCpu[model].push(ort.cpuPercent);
      if (python === undefined) continue;
      const torch = await TorchServer.start(python, threads);
      try {
        version = torch.version;
        for (const c of configs) await torch.server.rate(model, c, 1); // warm-up; torch.compile compiles here
        for (const c of configs) torchRates[c].push(await torch.server.rate(model, c, batches));
        if (model === 'mlp' && p === 0) peak = (await torch.server.ask({ sgemm: true }))['sgemm_gflops'] as number;
      } finally {
        await torch.server.close();
      }
    }
    const metric = `ort_train_${METRIC[model]}`;
    if (version === undefined) {
      rows.push(row('trainer', metric, median(ortRates[model]), 'samples/s'));
      continue;
    }
    const best = configs.reduce((a, b) => (median(torchRates[b]) > median(torchRates[a]) ? b : a));
    for (const c of configs)
      rows.push(
        pairedRow('trainer', c === best ? `${metric}_vs_best` : metric, ortRates[model], 'samples/s', {
          name: `torch ${version} CPU, ${TORCH_CONFIGS[c]}${c === best ? ' (best here)' : ''}`,
          values: torchRates[c],
        }),
      );
  }
  rows.push(row('trainer', 'ort_train_mlp_cpu_percent', median(ortCpu.mlp), '% of a core', { name: `${threads} cores`, value: 100 * threads }));
  rows.push(row('trainer', 'ort_train_cnn_cpu_percent', median(ortCpu.cnn), '% of a core', { name: `${threads} cores`, value: 100 * threads }));
  const gflops = (median(ortRates.mlp) * MLP_FLOP_PER_SAMPLE) / 1e9;
  rows.push(row('trainer', 'ort_train_mlp_gflops', gflops, 'GFLOP/s', peak > 0 ? { name: 'sgemm peak (2048² torch.mm)', value: peak } : undefined));

  log(opts.json, 'TF.js engine, wasm backend');
  const tfjsMlp = (await trainRate(dir, data.mlp, STUDENTS.mlp, 'mlp', runs, 'tfjs')).rate;
  const tfjsCnn = (await trainRate(dir, tfjsCnnData, STUDENTS.cnn, 'cnn', runs, 'tfjs')).rate;
  rows.push(row('trainer', 'train_mlp_784_512_256_10', tfjsMlp, 'samples/s'), row('trainer', 'train_cnn_32_64_128', tfjsCnn, 'samples/s'));

  // Debian's PyTorch 1.13 with its reference BLAS and with OpenBLAS: how much the BLAS alone moves a peer.
  const spec = { threads, runs, mlp_batches: opts.quick ? 2 : 40, cnn_batches: opts.quick ? 2 : 10 };
  if (imports('/usr/bin/python3', 'torch')) {
    for (const [blas, dirs] of Object.entries(BLAS_DIRS)) {
      if (!existsSync(dirs[0])) {
        log(opts.json, `no ${blas} BLAS in ${dirs[0]}: skipped${blas === 'openblas' ? ' (apt-get install libopenblas0-pthread)' : ''}`);
        continue;
      }
      log(opts.json, `PyTorch CPU, same models and loss (Debian python3-torch, ${blas} BLAS for this process)`);
      const p = debianTorchPeer(`, Debian, ${blas} BLAS`, spec, { ...process.env, LD_LIBRARY_PATH: dirs.join(':') });
      rows.push(row('trainer', 'ort_train_mlp_784_512_256_10', median(ortRates.mlp), 'samples/s', { name: p.name, value: p.mlp }));
      rows.push(row('trainer', 'ort_train_cnn_32_64_128', median(ortRates.cnn), 'samples/s', { name: p.name, value: p.cnn }));
    }
  } else {
    log(opts.json, 'python3-torch not installed: no Debian PyTorch 1.13 peer (apt-get install python3-torch)');
  }

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
  .option('--pairs <n>', 'ORT/PyTorch pairs per model, measured in turns (at least 3 for a reported ratio)', (v: string) => Number.parseInt(v, 10), 3)
  .option('--child-train <data,cache>', '(internal) train one epoch and print peak RSS in KB')
  .action(main);

await runCli(program);
