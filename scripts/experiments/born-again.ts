/**
 * Born-again networks (Furlanello et al. 2018): the student of one generation, served as a
 * teacher (its student.onnx in a models directory, precomputed into a cache like any teacher),
 * teaches the next generation of the same network on the same schedule. Generation 1 is a
 * scratch row (labels only); generations 2 and 3 use that network's KD recipe unchanged (no
 * tuning for these rows), and their ensemble averages the two generations' probabilities. Every
 * figure is paired with scratch seed by seed. Two networks: the MLP (`born-again`) and the small
 * CNN (`born-again-cnn`).
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, FASHION_MNIST_CLASSES, softmax } from '@distillate/shared';
import { predictRunLogits } from '@distillate/trainer';
import { ROOT, buildCaches, mean, pairedDelta, pool, replaceSection, std, trainRecipe } from './runner.js';

const TRAIN = 'fashion-mnist/train.arrow';
const C = 10;

async function accuracyOf(run: string): Promise<number> {
  return (JSON.parse(await readFile(join(run, 'run.json'), 'utf8')) as { test: { accuracy: number } }).test.accuracy;
}

/** One network's born-again experiment. */
export interface BornAgainSpec {
  /** The experiment id (--only), also its BENCHMARKS.md markers and results file. */
  readonly id: string;
  /** Generation 1: this scratch row's runs (`<scratch>-s<seed>`) and recipe. */
  readonly scratch: string;
  readonly scratchRecipe: string;
  /** The KD recipe generations 2 and 3 train with (their teacher replaced). */
  readonly kdRecipe: string;
  /** What the table says about the network and recipe. */
  readonly describe: string;
  readonly heading: string;
}

export const BORN_AGAIN: readonly BornAgainSpec[] = [
  {
    id: 'born-again',
    scratch: 'scratch',
    scratchRecipe: 'fmnist-scratch.yaml',
    kdRecipe: 'fmnist-kd.yaml',
    describe:
      "the MLP 784-128-10, 10 epochs; generation 1 is the scratch row; generation k + 1 learns from generation k's cache (same seed) with the KD recipe (fmnist-kd.yaml: T = 4, ce 0.1 / kd 0.9) unchanged",
    heading: '## Born-again self-distillation',
  },
  {
    id: 'born-again-cnn',
    scratch: 'cnn-scratch',
    scratchRecipe: 'fmnist-cnn-scratch.yaml',
    kdRecipe: 'fmnist-cnn-kd.yaml',
    describe:
      "the small CNN (conv16-pool-conv32-pool-48-10), 10 epochs; generation 1 is the cnn-scratch row; generation k + 1 learns from generation k's cache (same seed) with fmnist-cnn-kd.yaml (T = 1, kd only) unchanged",
    heading: '## Born-again self-distillation, small CNN',
  },
];

export async function runBornAgain(spec: BornAgainSpec, opts: { seeds: number; parallel: number }): Promise<void> {
  const out = join(ROOT, 'experiments-out', 'runs');
  const models = join(ROOT, 'experiments-out', 'born-again-models');
  await mkdir(models, { recursive: true });
  const seeds = Array.from({ length: opts.seeds }, (_, i) => i + 1);
  // Generation 1: the scratch row's runs (trained here for seeds it does not have yet).
  await pool(
    seeds.map((seed) => () => trainRecipe({ recipe: spec.scratchRecipe, seed, name: `${spec.scratch}-s${seed}`, out })),
    opts.parallel,
  );
  const runOf = (gen: number, seed: number) => join(out, gen === 1 ? `${spec.scratch}-s${seed}` : `${spec.id}-g${gen}-s${seed}`);
  // Model names: ba-g1-s1 (the MLP's, as before), ba-cnn-g1-s1, …
  const model = (gen: number, seed: number) => `${spec.id.replace('born-again', 'ba')}-g${gen}-s${seed}`;
  for (const gen of [2, 3]) {
    for (const seed of seeds) {
      const name = model(gen - 1, seed);
      await copyFile(join(runOf(gen - 1, seed), 'student.onnx'), join(models, `${name}.onnx`));
      await writeFile(join(models, `${name}.json`), `${JSON.stringify({ classes: [...FASHION_MNIST_CLASSES], layout: 'flat' })}\n`);
    }
    const keys = await buildCaches(
      seeds.map((seed) => ({ type: 'precompute' as const, teacher: model(gen - 1, seed), dataset: TRAIN })),
      models,
    );
    await pool(
      seeds.map(
        (seed, i) => () =>
          trainRecipe({ recipe: spec.kdRecipe, seed, name: `${spec.id}-g${gen}-s${seed}`, out, set: [`teachers=[{ cache: cache/${keys[i]} }]`] }),
      ),
      opts.parallel,
    );
  }

  // The ensemble of generations 2 and 3: their softmax probabilities averaged, on the test split.
  const test = await DatasetReader.open(join(ROOT, 'data', 'fashion-mnist', 'test.arrow'));
  const rows = await test.countRows();
  const D = test.inputSize;
  const x = new Float32Array(rows * D);
  const labels = new Int32Array(rows);
  let r0 = 0;
  for await (const b of test) {
    for (let i = 0; i < b.rows * D; i++) x[r0 * D + i] = b.inputs[i]! * test.info.scaling.scale + test.info.scaling.offset;
    labels.set(b.labels, r0);
    r0 += b.rows;
  }
  const acc: Record<string, number[]> = { g1: [], g2: [], g3: [], ens: [] };
  for (const seed of seeds) {
    acc['g1']!.push(await accuracyOf(runOf(1, seed)));
    acc['g2']!.push(await accuracyOf(runOf(2, seed)));
    acc['g3']!.push(await accuracyOf(runOf(3, seed)));
    const [a, b] = [await predictRunLogits(runOf(2, seed), x, rows), await predictRunLogits(runOf(3, seed), x, rows)];
    let correct = 0;
    for (let r = 0; r < rows; r++) {
      const p = softmax(a.subarray(r * C, (r + 1) * C), C);
      const q = softmax(b.subarray(r * C, (r + 1) * C), C);
      let best = 0;
      for (let k = 1; k < C; k++) if (p[k]! + q[k]! > p[best]! + q[best]!) best = k;
      if (best === labels[r]) correct++;
    }
    acc['ens']!.push(correct / rows);
  }
  const pm = (v: readonly number[]) => `${(mean(v) * 100).toFixed(2)} ± ${(std(v) * 100).toFixed(2)}`;
  const bySeed = (v: readonly number[]) => new Map(v.map((a, i) => [seeds[i]!, a]));
  const paired = (v: readonly number[]) => pairedDelta(bySeed(v), bySeed(acc['g1']!));
  const lines = [
    `Generated by \`npm run experiments -- --only ${spec.id} --seeds ${opts.seeds}\` on ${new Date().toISOString().slice(0, 10)}: ${spec.describe}. Test accuracy, mean ± std over ${opts.seeds} seeds; Δ is paired with scratch seed by seed (95 % t interval).`,
    '',
    '| generation | test accuracy, % | per seed | paired Δ vs scratch, pt |',
    '|---|---|---|---|',
    `| 1 (${spec.scratch}, labels only) | ${pm(acc['g1']!)} | ${acc['g1']!.map((v) => (v * 100).toFixed(2)).join(', ')} | |`,
    `| 2 (from generation 1) | ${pm(acc['g2']!)} | ${acc['g2']!.map((v) => (v * 100).toFixed(2)).join(', ')} | ${paired(acc['g2']!)} |`,
    `| 3 (from generation 2) | ${pm(acc['g3']!)} | ${acc['g3']!.map((v) => (v * 100).toFixed(2)).join(', ')} | ${paired(acc['g3']!)} |`,
    `| ensemble of 2 and 3 | ${pm(acc['ens']!)} | ${acc['ens']!.map((v) => (v * 100).toFixed(2)).join(', ')} | ${paired(acc['ens']!)} |`,
  ];
  const table = lines.join('\n');
  console.log(table);
  await writeFile(join(ROOT, 'experiments-out', `${spec.id}.json`), `${JSON.stringify(acc, null, 2)}\n`);
  const path = join(ROOT, 'BENCHMARKS.md');
  await writeFile(path, replaceSection(await readFile(path, 'utf8'), `<!-- ${spec.id}:begin -->`, `<!-- ${spec.id}:end -->`, table, spec.heading));
}
