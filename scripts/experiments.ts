/**
 * npm run experiments [-- --seeds 5 --parallel 2 --only kd,scratch --set epochs=30 --tables]
 *
 * The uses of distillation on Fashion-MNIST, each a recipe under recipes/, run over several seeds:
 * better accuracy (scratch vs KD/DKD/NKD/DIST/LS-KD), transfer across label sets, fewer labels and
 * self-distillation; plus the teacher/student size and latency comparison. It imports the data
 * (with the 600-label split), builds every cache once through the server's job manager, trains
 * each (recipe, seed) in its own `distillate-train` process, and writes the results to
 * experiments-out/results.json and the generated section of BENCHMARKS.md.
 *
 * Finished runs (those with a run.json) are not trained again: re-running resumes.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { acquireFashionMnist, importFashionMnist, onnxParameterCount, runCli, splitLabelled } from '@distillate/shared';
import type { JobRequestInput } from '@distillate/server';
import { ortLatency } from './demo.js';
import { ROOT, buildCaches, mean, pairedDelta, pool, std, trainRecipe } from './experiments/runner.js';
import { unionTeacherAccuracy } from './experiments/union-teacher.js';
import { writeTablePages } from './experiments/pages.js';
import { viewTable } from './experiments/view-table.js';
import { BORN_AGAIN, runBornAgain } from './experiments/born-again.js';
import { runLeftOut } from './experiments/left-out.js';
import { TUNING_ID, readTuning, runTuning, type TuningResult } from './experiments/tuning.js';

/** Not recipe rows: the held-out tuning, the left-out-class experiment (20 runs per seed) and born-again generations (experiments/). */
const LEFT_OUT = 'left-out';
const SPECIAL = [LEFT_OUT, TUNING_ID, ...BORN_AGAIN.map((b) => b.id)];

interface Experiment {
  readonly id: string;
  readonly group: 'accuracy' | 'accuracy-ls0' | 'cnn' | 'cnn-tuned' | 'cnn-30' | 'resnet' | 'cnn-transfer' | 'transfer' | 'labels' | 'self' | 'engines';
  /** For a row on the TF.js engine: the id of the same recipe's row on the ORT engine. */
  readonly sameAs?: string;
  /** The row it is compared with, seed by seed (paired difference with a 95 % interval). */
  readonly baseline?: string;
  readonly label: string;
  readonly recipe: string;
  readonly set?: readonly string[];
  /** The caches its recipe names (built once, before any training). */
  readonly needs?: readonly JobRequestInput[];
  /** Trained at the learning rate the held-out tuning chose for this row id (experiments-out/tuning.json). */
  readonly tuned?: string;
}

const TRAIN = 'fashion-mnist/train.arrow';
const POOL = 'fashion-mnist/train-pool.arrow';
const teacherCache: JobRequestInput = { type: 'precompute', teacher: 'fmnist-teacher', dataset: TRAIN };
const ls0Cache: JobRequestInput = { type: 'precompute', teacher: 'fmnist-teacher-ls0', dataset: TRAIN };
/** The training split less a held-out 5,000 (500 per class, labels removed from the rest), for calibration. */
const VAL_POOL = 'val/train-pool.arrow';
/** fmnist-teacher-ls0's logits for K stored views of every training image (the view-cache rows). */
const ls0Views = (count: number): JobRequestInput => ({
  type: 'precompute',
  teacher: 'fmnist-teacher-ls0',
  dataset: TRAIN,
  views: { count, seed: 1, augment: { shift: 2, flip: true } },
});
/** The view-cache rows: K stored views per image, against the teacher online on fresh views. */
export const VIEW_COUNTS = [1, 4, 16, 64] as const;
const viewRow = (K: number): Experiment => ({
  id: `cnn-kd-views${K}`,
  group: 'cnn',
  label: `small CNN, the same KD from a view cache, K = ${K}`,
  recipe: 'fmnist-cnn-kd-views.yaml',
  ...(K === 4 ? {} : { set: [`teachers.0.views.count=${K}`] }),
  needs: [ls0Views(K)],
  baseline: 'cnn-kd-online',
});
const halves: JobRequestInput[] = [
  { type: 'precompute', teacher: 'fmnist-teacher-0-4', dataset: TRAIN },
  { type: 'precompute', teacher: 'fmnist-teacher-5-9', dataset: TRAIN },
];

export const EXPERIMENTS: readonly Experiment[] = [
  { id: 'scratch', group: 'accuracy', label: 'scratch (labels only)', recipe: 'fmnist-scratch.yaml' },
  { id: 'kd', group: 'accuracy', label: 'KD', recipe: 'fmnist-kd.yaml', needs: [teacherCache], baseline: 'scratch' },
  { id: 'dkd', group: 'accuracy', label: 'DKD', recipe: 'fmnist-dkd.yaml', needs: [teacherCache], baseline: 'scratch' },
  { id: 'nkd', group: 'accuracy', label: 'NKD', recipe: 'fmnist-nkd.yaml', needs: [teacherCache], baseline: 'scratch' },
  { id: 'dist', group: 'accuracy', label: 'DIST', recipe: 'fmnist-dist.yaml', needs: [teacherCache], baseline: 'scratch' },
  { id: 'lskd', group: 'accuracy', label: 'LS-KD', recipe: 'fmnist-lskd.yaml', needs: [teacherCache], baseline: 'scratch' },
  {
    id: 'kd-sharp',
    group: 'accuracy',
    label: 'KD, T = 0.25, kd only, from fmnist-teacher-ls0 (T chosen on a validation split)',
    recipe: 'fmnist-kd-sharp.yaml',
    needs: [ls0Cache],
    baseline: 'scratch',
  },
  {
    id: 'kd-sharp-cal',
    group: 'accuracy',
    label: 'the same, trained on 55,000 images and calibrated on the other 5,000',
    recipe: 'fmnist-kd-sharp-cal.yaml',
    needs: [{ type: 'precompute', teacher: 'fmnist-teacher-ls0', dataset: VAL_POOL }],
    baseline: 'scratch',
  },
  { id: 'cnn-scratch', group: 'cnn', label: 'small CNN, scratch (labels only)', recipe: 'fmnist-cnn-scratch.yaml' },
  {
    id: 'cnn-kd',
    group: 'cnn',
    label: 'small CNN, KD T = 1, kd only, clean cached logits of fmnist-teacher-ls0',
    recipe: 'fmnist-cnn-kd.yaml',
    needs: [ls0Cache],
    baseline: 'cnn-scratch',
  },
  {
    id: 'cnn-scratch-aug',
    group: 'cnn',
    label: 'small CNN, scratch on fresh augmented views (shifts ≤ 2 px, flips; a new draw every epoch)',
    recipe: 'fmnist-cnn-scratch-aug.yaml',
    baseline: 'cnn-scratch',
  },
  {
    id: 'cnn-kd-online',
    group: 'cnn',
    label: 'small CNN, KD T = 1, kd only, teacher online on the same fresh views',
    recipe: 'fmnist-cnn-kd-online.yaml',
    baseline: 'cnn-scratch-aug',
  },
  ...VIEW_COUNTS.map(viewRow),
  {
    id: 'cnn-scratch-tuned',
    group: 'cnn-tuned',
    label: 'small CNN, scratch (labels only), lr chosen on the held-out split',
    recipe: 'fmnist-cnn-scratch.yaml',
    tuned: 'cnn-scratch',
  },
  {
    id: 'cnn-kd-tuned',
    group: 'cnn-tuned',
    label: 'small CNN, KD T = 1, kd only, clean cached logits, lr chosen on the held-out split',
    recipe: 'fmnist-cnn-kd.yaml',
    needs: [ls0Cache],
    tuned: 'cnn-kd',
    baseline: 'cnn-scratch-tuned',
  },
  { id: 'cnn-scratch-30', group: 'cnn-30', label: 'small CNN, scratch (labels only), 30 epochs', recipe: 'fmnist-cnn-scratch.yaml', set: ['epochs=30'] },
  {
    id: 'cnn-kd-30',
    group: 'cnn-30',
    label: 'small CNN, KD T = 1, kd only, clean cached logits, 30 epochs',
    recipe: 'fmnist-cnn-kd.yaml',
    set: ['epochs=30'],
    needs: [ls0Cache],
    baseline: 'cnn-scratch-30',
  },
  { id: 'resnet-scratch', group: 'resnet', label: 'small ResNet, scratch (labels only)', recipe: 'fmnist-resnet-scratch.yaml' },
  {
    id: 'resnet-kd',
    group: 'resnet',
    label: 'small ResNet, KD T = 1, kd only, clean cached logits of fmnist-teacher-ls0',
    recipe: 'fmnist-resnet-kd.yaml',
    needs: [ls0Cache],
    baseline: 'resnet-scratch',
  },
  {
    id: 'cnn-transfer',
    group: 'cnn-transfer',
    label: 'small CNN, two teachers (classes 0–4, 5–9), no labels; union: balanced',
    recipe: 'fmnist-transfer-cnn.yaml',
    needs: halves,
    baseline: 'cnn-scratch',
  },
  { id: 'scratch-20', group: 'accuracy-ls0', label: 'scratch (labels only), 20 epochs', recipe: 'fmnist-scratch-20.yaml' },
  {
    id: 'kd-ls0',
    group: 'accuracy-ls0',
    label: 'KD, T = 0.5, kd only, from fmnist-teacher-ls0, 20 epochs',
    recipe: 'fmnist-kd-ls0.yaml',
    needs: [ls0Cache],
    baseline: 'scratch-20',
  },
  {
    id: 'transfer',
    group: 'transfer',
    label: 'two teachers (classes 0–4, 5–9), no labels; union: balanced',
    recipe: 'fmnist-transfer.yaml',
    needs: halves,
    baseline: 'scratch-512',
  },
  {
    id: 'transfer-merged',
    group: 'transfer',
    label: 'same, union: merged (concatenated logits, no rescaling or offsets)',
    recipe: 'fmnist-transfer.yaml',
    set: ['union=merged'],
    needs: halves,
  },
  {
    id: 'transfer-subsets',
    group: 'transfer',
    label: 'same, union: subsets (each teacher matched on its own classes only)',
    recipe: 'fmnist-transfer.yaml',
    set: ['union=subsets'],
    needs: halves,
  },
  { id: 'scratch-512', group: 'transfer', label: 'the same student (784-512-10) on all 60,000 labels', recipe: 'fmnist-scratch-512.yaml' },
  { id: '600-scratch', group: 'labels', label: '600 labels alone', recipe: 'fmnist-600-scratch.yaml' },
  {
    id: '600-semi',
    group: 'labels',
    label: '600 labels + pool labelled by the shipped teacher (saw all labels)',
    recipe: 'fmnist-600-semi.yaml',
    needs: [{ type: 'label', teacher: 'fmnist-teacher', dataset: POOL }],
    baseline: '600-scratch',
  },
  {
    id: '600-semi-600',
    group: 'labels',
    label: '600 labels + pool labelled by a teacher trained on the same 600',
    recipe: 'fmnist-600-semi.yaml',
    set: ['semi.teacher=fmnist-teacher-600'],
    needs: [{ type: 'label', teacher: 'fmnist-teacher-600', dataset: POOL }],
    baseline: '600-scratch',
  },
  { id: 'self', group: 'self', label: 'self-distillation (own snapshot teaches the last 4 epochs)', recipe: 'fmnist-self-distill.yaml', baseline: 'scratch' },
  {
    id: 'scratch-tfjs',
    group: 'engines',
    label: 'scratch on the TF.js engine (wasm)',
    recipe: 'fmnist-scratch.yaml',
    set: ['engine=tfjs', 'backend=wasm'],
    sameAs: 'scratch',
    baseline: 'scratch',
  },
  {
    id: 'kd-tfjs',
    group: 'engines',
    label: 'KD on the TF.js engine (wasm)',
    recipe: 'fmnist-kd.yaml',
    set: ['engine=tfjs', 'backend=wasm'],
    needs: [teacherCache],
    sameAs: 'kd',
    baseline: 'kd',
  },
];

/** The row's own overrides, with the tuned learning rate where the row takes one. */
function settings(e: Experiment, tuning: TuningResult | undefined): string[] {
  if (e.tuned === undefined) return [...(e.set ?? [])];
  const lr = tuning?.chosen[e.tuned];
  if (lr === undefined)
    throw new Error(`${e.id} trains at the learning rate the held-out tuning chooses for ${e.tuned}: run \`npm run experiments -- --only ${TUNING_ID}\` first`);
  return [...(e.set ?? []), `optimizer.lr=${lr}`];
}

/** Train one (experiment, seed) in its own process, unless its run.json already exists. */
function trainOnce(e: Experiment, seed: number, out: string, extra: readonly string[], tuning: TuningResult | undefined): Promise<void> {
  return trainRecipe({ recipe: e.recipe, seed, name: `${e.id}-s${seed}`, out, set: [...settings(e, tuning), ...extra] });
}

const pm = (v: readonly number[]) =>
  v.length < 2 ? `${(mean(v) * 100).toFixed(2)} (one seed)` : `${(mean(v) * 100).toFixed(2)} ± ${(std(v) * 100).toFixed(2)}`;

async function sizes(accuracies: Record<string, number[]>, runs: string): Promise<string[]> {
  const rows: string[] = [
    '| model | parameters | ONNX size | ORT latency, batch 1 | ORT latency, batch 256 | test accuracy |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  const teacherMetrics = JSON.parse(await readFile(join(ROOT, 'models', 'fmnist-teacher.metrics.json'), 'utf8')) as { testAccuracy: number };
  const models: [string, string, number[], string][] = [
    ['teacher CNN (models/fmnist-teacher.onnx)', join(ROOT, 'models', 'fmnist-teacher.onnx'), [1, 28, 28], `${(teacherMetrics.testAccuracy * 100).toFixed(2)}`],
    ['student MLP 784-128-10, KD', join(runs, 'kd-s1', 'student.onnx'), [784], pm(accuracies['kd'] ?? [])],
  ];
  for (const [name, path, shape, acc] of models) {
    const bytes = await readFile(path);
    const lat = await ortLatency(path, shape);
    rows.push(
      `| ${name} | ${onnxParameterCount(bytes).toLocaleString('en-US')} | ${(bytes.length / 1e6).toFixed(2)} MB | ${lat.batch1.toFixed(3)} ms | ${lat.batch256.toFixed(2)} ms | ${acc} % |`,
    );
  }
  return rows;
}

async function main(opts: { seeds: number; parallel: number; only?: string[]; set: string[]; tables?: boolean }): Promise<void> {
  // Each training process takes every core by default; `parallel` of them share the cores instead of oversubscribing them.
  process.env['DISTILLATE_THREADS'] ??= String(Math.max(1, Math.floor(availableParallelism() / opts.parallel)));
  const data = join(ROOT, 'data', 'fashion-mnist');
  if (!existsSync(join(data, 'train-pool.arrow'))) {
    const { train } = await importFashionMnist((await acquireFashionMnist()).dir, data);
    await splitLabelled(train.path, { perClass: 60, labelled: join(data, 'train-labelled-600.arrow'), pool: join(data, 'train-pool.arrow') });
  }
  const val = join(ROOT, 'data', 'val');
  if (!existsSync(join(val, 'train-pool.arrow'))) {
    const { train } = await importFashionMnist((await acquireFashionMnist()).dir, val);
    await splitLabelled(train.path, { perClass: 500, labelled: join(val, 'train-labelled-5000.arrow'), pool: join(val, 'train-pool.arrow') });
  }
  const chosen = opts.tables === true ? [] : EXPERIMENTS.filter((e) => opts.only === undefined || opts.only.includes(e.id));
  let tuning = opts.tables !== true && (opts.only === undefined || opts.only.includes(TUNING_ID)) ? await runTuning({ parallel: opts.parallel }) : undefined;
  tuning ??= await readTuning();
  if (opts.tables !== true && (opts.only === undefined || opts.only.includes(LEFT_OUT))) await runLeftOut({ seeds: opts.seeds, parallel: opts.parallel });
  for (const spec of BORN_AGAIN)
    if (opts.tables !== true && (opts.only === undefined || opts.only.includes(spec.id)))
      await runBornAgain(spec, { seeds: opts.seeds, parallel: opts.parallel });
  const jobs = new Map(chosen.flatMap((e) => e.needs ?? []).map((j) => [JSON.stringify(j), j]));
  await buildCaches([...jobs.values()]);
  const out = join(ROOT, 'experiments-out', 'runs');
  await mkdir(out, { recursive: true });
  const seeds = Array.from({ length: opts.seeds }, (_, i) => i + 1);
  const tasks = seeds.flatMap((seed) => chosen.map((e) => () => trainOnce(e, seed, out, opts.set, tuning)));
  await pool(tasks, opts.parallel);

  // The tables cover every experiment with finished runs, not only this invocation's.
  // Every finished seed of every experiment: an invocation with fewer seeds (or --only) keeps the others' rows whole.
  const acc: Record<string, number[]> = {};
  const bySeed: Record<string, Map<number, number>> = {};
  for (const e of EXPERIMENTS) {
    for (let seed = 1; existsSync(join(out, `${e.id}-s${seed}`)); seed++) {
      const runJson = join(out, `${e.id}-s${seed}`, 'run.json');
      if (!existsSync(runJson)) continue;
      const a = (JSON.parse(await readFile(runJson, 'utf8')) as { test: { accuracy: number } }).test.accuracy;
      (acc[e.id] ??= []).push(a);
      (bySeed[e.id] ??= new Map()).set(seed, a);
    }
  }
  const paired = (id: string, base: string): string => pairedDelta(bySeed[id], bySeed[base]);
  await writeFile(join(ROOT, 'experiments-out', 'results.json'), `${JSON.stringify({ accuracy: acc }, null, 2)}\n`);

  const cmd = (e: Experiment) =>
    `\`npx distillate-train --recipe recipes/${e.recipe}${settings(e, tuning)
      .map((s) => ` --set ${s}`)
      .join('')} --seed S\``;
  const lines: string[] = [];
  const groups: [Experiment['group'], string][] = [
    ['accuracy', 'Better accuracy: the same MLP student (784-128-10), 10 epochs'],
    ['accuracy-ls0', 'Better accuracy at 20 epochs: 784-128-10, a teacher without label smoothing, T = 0.5'],
    ['cnn', 'A small CNN student (conv16-pool-conv32-pool-48-10, 80,602 parameters), 10 epochs: from labels and by KD, on clean images and on augmented views'],
    [
      'cnn-tuned',
      "The small CNN, 10 epochs, each row at the learning rate chosen for it on the held-out split (the tuning table above; the rows above use the pilot's 0.001)",
    ],
    ['cnn-30', 'The small CNN at 30 epochs (the same recipes, `--set epochs=30`; the cosine schedule spans the 30)'],
    [
      'resnet',
      "A small ResNet student (stem conv16, one residual block at 16 and one at 32 channels, BatchNorm, global average pooling; 19,706 parameters), 10 epochs, the small CNN's untuned settings (lr 0.001)",
    ],
    ['cnn-transfer', 'Transfer across label sets with the small CNN student, 10 epochs (vs the same student on all 60,000 labels: cnn-scratch above)'],
    ['transfer', 'Transfer across label sets: MLP 784-512-10, 10 epochs, T = 1 (the last row is the same student trained on the labels)'],
    ['labels', 'Fewer labels: 600 labelled images (60 per class) + the other 59,400 unlabelled'],
    ['self', 'Self-distillation (compare with "scratch" above)'],
    ['engines', 'Engine parity: the same recipes and seeds on the TF.js engine (wasm) as in the first table (ORT engine)'],
  ];
  let mergedTeacher: number | undefined;
  for (const [group, title] of groups) {
    const es = EXPERIMENTS.filter((e) => e.group === group && acc[e.id] !== undefined);
    if (es.length === 0) continue;
    lines.push(
      `**${title}**`,
      '',
      '| run | test accuracy, % (mean ± sample std over seeds) | per seed | vs | paired Δ, pt (95 % interval) | command |',
      '|---|---|---|---|---|---|',
    );
    for (const e of es) {
      const vs = e.baseline === undefined ? '' : e.sameAs !== undefined ? `${e.baseline} (ORT engine)` : e.baseline;
      lines.push(
        `| ${e.label} | ${pm(acc[e.id]!)} | ${acc[e.id]!.map((a) => (a * 100).toFixed(2)).join(', ')} | ${vs} | ${e.baseline === undefined ? '' : paired(e.id, e.baseline)} | ${cmd(e)} |`,
      );
    }
    lines.push('');
    if (group === 'cnn') lines.push(...(await viewTable(out, bySeed)));
    if (group === 'transfer' || group === 'cnn-transfer') {
      // The balance is fitted on the two caches alone, so every transfer run has the same merged teacher: scored once.
      const run = ['transfer-s1', 'cnn-transfer-s1'].map((r) => join(out, r)).find((r) => existsSync(join(r, 'run.json')));
      if (run !== undefined) mergedTeacher ??= await unionTeacherAccuracy(run, ['fmnist-teacher-0-4', 'fmnist-teacher-5-9']);
      if (mergedTeacher !== undefined)
        lines.push(
          `What these students copy, the merged teacher itself (the two halves' logits rescaled, concatenated and offset as fitted for union: balanced; its argmax): ${(mergedTeacher * 100).toFixed(2)} % on the test split.`,
          '',
        );
    }
  }
  if (acc['kd'] !== undefined)
    lines.push(
      '**Lower latency, fewer parameters** (ORT CPU execution provider, its default threads; median of 50 calls at batch 1, 7 at batch 256, after a warm-up)',
      '',
      ...(await sizes(acc, out)),
      '',
    );
  const table = lines.join('\n');
  console.log(table);
  const pages = await writeTablePages(
    out,
    join(ROOT, 'experiments-out', 'pages'),
    groups.map(([id, title]) => ({ id, title, rows: EXPERIMENTS.filter((e) => e.group === id).map((e) => e.id) })),
  );
  if (pages.length > 0) console.log(`table pages (curves and recipes of each table's seed-1 runs): ${pages.join(', ')}`);

  const path = join(ROOT, 'BENCHMARKS.md');
  const doc = await readFile(path, 'utf8');
  const begin = '<!-- experiments:begin -->';
  const end = '<!-- experiments:end -->';
  const stamp = `Generated by \`npm run experiments -- --seeds 5\` (5 seeds per row, except the TF.js engine rows (3, at about 10 minutes a run on wasm) and the 30-epoch rows (3, at 8–13 minutes a run, two at a time); the per-seed column lists them; a small-CNN run takes 2.3–4 minutes per 10 epochs, a small-ResNet run 13–15, two at a time; \`--only ID --seeds N\` reruns one row) on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, ${cpus().length} cores; the ORT engine on the CPU EP unless a row says TF.js). Seed S trains with \`--seed S\`.`;
  const section = `${begin}\n${stamp}\n\n${table}\n${end}`;
  const a = doc.indexOf(begin);
  const b = doc.indexOf(end);
  await writeFile(
    path,
    a >= 0 && b > a ? doc.slice(0, a) + section + doc.slice(b + end.length) : `${doc.trimEnd()}\n\n## Fashion-MNIST experiments (issue #5)\n\n${section}\n`,
  );
}

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('a positive integer');
  return n;
};

const program = new Command('experiments')
  .description('Run the Fashion-MNIST distillation experiments over several seeds and record them in BENCHMARKS.md')
  .option('--seeds <n>', 'seeds per experiment (1..n)', int, 5)
  .option(
    '--parallel <n>',
    'training processes at once (each ORT engine gets cores / n threads, unless DISTILLATE_THREADS says; TF.js wasm uses one each)',
    int,
    1,
  )
  .option('--only <ids>', `comma-separated subset of: ${[...EXPERIMENTS.map((e) => e.id), ...SPECIAL].join(', ')}`, (v: string) => {
    const ids = v.split(',');
    const unknown = ids.filter((id) => !SPECIAL.includes(id) && !EXPERIMENTS.some((e) => e.id === id));
    if (unknown.length > 0)
      throw new InvalidArgumentError(`unknown experiment(s) ${unknown.join(', ')}; choose from ${[...EXPERIMENTS.map((e) => e.id), ...SPECIAL].join(', ')}`);
    return ids;
  })
  .option('--tables', 'train nothing: regenerate the tables (and re-measure latency) from the finished runs')
  .option('--set <key=value>', 'override a recipe field in every run (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .action(main);
await runCli(program);
