/**
 * `train(recipe)`: the whole run. Streams the dataset and caches, trains the student with the
 * recipe's loss, evaluates every epoch, checkpoints, and finally writes the TF.js model,
 * student.onnx (checked against TF.js in onnxruntime), report.html and run.json — run.json
 * last, so a directory without it never claims success.
 */
import { mkdir, readFile, readdir, rm, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { DatasetReader, LogitCacheReader, LogitCacheWriter, writeFileAtomic, type DatasetBatch } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import { selectBackend, type BackendChoice } from './backend.js';
import { resolveCacheDir } from './cache-ref.js';
import { balanceOffsets, equaliseSpread, meanSoftmax, mergedLogitSample } from './union-balance.js';
import { OnlineTeacher } from './online-teacher.js';
import { epochBatches, prefetch, type BatchLayout, type SlotSpec, type SourceSpec, type TrainBatch } from './data.js';
import { collectLogits, evaluate, type Evaluation } from './evaluate.js';
import { fitTemperature } from './calibration.js';
import { exportOnnx } from './export-onnx.js';
import { crossEntropyLoss, distLoss, dkdLoss, kdLoss, lsKdLoss, multiTeacherLoss, nkdLoss, topKKdLoss } from './losses/index.js';
import { loadLayersModel, saveLayersModel } from './model-io.js';
import type { Distill, Recipe } from './recipe.js';
import { renderReport, type EpochMetrics } from './report.js';
import { buildStudent, logitLayer, scaleLogits, singleSampleLatencyMs } from './students.js';

export class TrainingError extends Error {
  override readonly name = 'TrainingError';
}

export interface TrainOptions {
  /** Continue from runs/<name>/checkpoint. */
  readonly resume?: boolean;
  readonly onEpochStart?: (epoch: number, epochs: number, rowsPerEpoch: number) => void;
  readonly onBatch?: (rowsDone: number) => void;
  readonly onEpochEnd?: (m: EpochMetrics) => void;
  /** Skip ONNX export (tests of the loop alone). */
  readonly skipExport?: boolean;
}

export interface RunResult {
  readonly runDir: string;
  readonly backend: BackendChoice;
  readonly metrics: readonly EpochMetrics[];
  readonly test?: Evaluation;
  readonly parameters: number;
  readonly latencyMs: number;
  readonly onnx?: { readonly path: string; readonly maxAbsDiff: number };
  /** Post-hoc temperature scaling (recipe `calibration`): τ, and NLL/ECE on the calibration set before and after. */
  readonly calibration?: { readonly data: string; readonly rows: number; readonly temperature: number; readonly nllBefore: number; readonly nllAfter: number; readonly eceBefore: number; readonly eceAfter: number };
}

/**
 * The distillation term for one batch: kdWeight × method(student, teacher...). Returns named
 * terms; the loop adds them.
 */
type LossTerms = Record<string, tf.Scalar>;

/** Registered methods, keyed by name (no import side effects). */
const dense = {
  kd: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => kdLoss(s, t, p as { temperature: number }),
  dkd: (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => dkdLoss(s, t, y, p as { alpha: number; beta: number; temperature: number }),
  nkd: (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => nkdLoss(s, t, y, p as { temperature: number; gamma: number }),
  dist: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => distLoss(s, t, p as { beta: number; gamma: number; temperature: number }),
  lskd: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => lsKdLoss(s, t, p as { temperature: number }),
} satisfies Record<Exclude<Distill['method'], 'scratch'>, (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => tf.Scalar>;

interface TeacherPlan {
  readonly caches: LogitCacheReader[];
  readonly layout: BatchLayout;
  /** 'single': one teacher (or several with the same classes, averaged); 'union': different class lists. */
  readonly mode: 'none' | 'single' | 'union';
  readonly classes: readonly string[];
  /** union mode: each teacher's class positions in the union. */
  readonly classIndex: readonly number[][];
  /** union mode: how the teachers are matched (recipe `union`). */
  readonly union: 'subsets' | 'merged' | 'balanced';
  /** union 'balanced': per-teacher factors and per-class offsets, z·scale + offset (none for 'merged'). */
  readonly scales?: Float32Array;
  readonly offsets?: Float32Array;
}

function temperatureOf(d: Distill): number {
  return 'temperature' in d.params ? (d.params as { temperature: number }).temperature : 1;
}

async function planTeachers(caches: LogitCacheReader[], dataset: DatasetReader, distill: Distill, union: TeacherPlan['union'] = 'subsets'): Promise<TeacherPlan> {
  const D = dataset.inputSize;
  const datasetClasses = dataset.info.classes;
  if (caches.length === 0) return { caches, layout: { inputSize: D, slots: [] }, mode: 'none', classes: datasetClasses, classIndex: [], union };
  const fingerprint = await dataset.fingerprint();
  for (const c of caches) {
    if (c.manifest.dataset.fingerprint !== fingerprint) {
      throw new TrainingError(`cache ${c.dir} was built from dataset ${c.manifest.dataset.fingerprint.slice(0, 12)}…, not ${dataset.path} (${fingerprint.slice(0, 12)}…)`);
    }
  }
  const slots: SlotSpec[] = caches.map((c) => (c.manifest.storage.mode === 'dense' ? { kind: 'dense', classes: c.classes.length } : { kind: 'topk', k: c.manifest.storage.k }));
  const lists = caches.map((c) => c.classes);
  const same = lists.every((l) => l.length === lists[0]!.length && l.every((n, i) => n === lists[0]![i]));
  for (const c of caches) {
    if (c.manifest.storage.mode === 'topk') {
      if (distill.method !== 'kd') throw new TrainingError(`cache ${c.dir} is top-k: only distill.method kd supports top-k caches (got ${distill.method})`);
      if (temperatureOf(distill) !== c.manifest.temperature) {
        throw new TrainingError(`cache ${c.dir} stores top-${c.manifest.storage.k} logits at T = ${c.manifest.temperature}; set distill.params.temperature to ${c.manifest.temperature}`);
      }
    }
  }
  if (same) {
    if (union !== 'subsets') throw new TrainingError(`union: ${union} is for teachers with different (disjoint) class lists; these share one, and are averaged without it`);
    if (lists[0]!.length !== datasetClasses.length) {
      throw new TrainingError(`cache ${caches[0]!.dir} has ${lists[0]!.length} classes but the dataset and student have ${datasetClasses.length}`);
    }
    if (caches.length > 1 && slots.some((s) => s.kind !== 'dense')) throw new TrainingError('averaging several teachers needs dense caches');
    return { caches, layout: { inputSize: D, slots }, mode: 'single', classes: datasetClasses, classIndex: [], union };
  }
  if (slots.some((s) => s.kind !== 'dense')) throw new TrainingError('teachers with different class lists need dense caches');
  const all: string[] = [];
  for (const l of lists) for (const n of l) if (!all.includes(n)) all.push(n);
  if (union !== 'subsets') {
    if (all.length !== lists.reduce((a, l) => a + l.length, 0)) throw new TrainingError(`union: ${union} needs teachers with disjoint class lists (a class is in more than one); use union: subsets`);
    if (distill.method !== 'kd') throw new TrainingError(`union: ${union} trains with distill.method kd (got ${distill.method})`);
  }
  return { caches, layout: { inputSize: D, slots }, mode: 'union', classes: all, classIndex: lists.map((l) => l.map((n) => all.indexOf(n))), union };
}

function labelMapFor(datasetClasses: readonly string[], union: readonly string[], mode: TeacherPlan['mode']): Int32Array | undefined {
  if (mode !== 'union') return undefined;
  return Int32Array.from(datasetClasses, (n) => union.indexOf(n)); // −1: a class no teacher knows → unlabelled
}

/** The optimizer's state (iteration count, moments) as optimizer.json + optimizer.bin. */
async function saveOptimizerState(optimizer: tf.Optimizer, dir: string): Promise<void> {
  const weights = await optimizer.getWeights();
  const specs: { name: string; shape: number[]; dtype: string; bytes: number }[] = [];
  const chunks: Uint8Array[] = [];
  for (const w of weights) {
    const data = await w.tensor.data();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    specs.push({ name: w.name, shape: w.tensor.shape, dtype: w.tensor.dtype, bytes: bytes.length });
    chunks.push(bytes);
    if (w.name === 'iter') w.tensor.dispose(); // a fresh scalar; the rest are the optimizer's own variables
  }
  await writeFile(join(dir, 'optimizer.bin'), Buffer.concat(chunks));
  await writeFile(join(dir, 'optimizer.json'), JSON.stringify(specs));
}

async function loadOptimizerState(optimizer: tf.Optimizer, dir: string): Promise<void> {
  let specs: { name: string; shape: number[]; dtype: 'float32' | 'int32'; bytes: number }[];
  let bin: Buffer;
  try {
    specs = JSON.parse(await readFile(join(dir, 'optimizer.json'), 'utf8'));
    bin = await readFile(join(dir, 'optimizer.bin'));
  } catch {
    return; // a checkpoint from before optimizer state was saved: the moments restart
  }
  let off = 0;
  const named = specs.map((s) => {
    const raw = bin.subarray(off, off + s.bytes);
    off += s.bytes;
    const copy = new Uint8Array(raw).buffer;
    return { name: s.name, tensor: tf.tensor(s.dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy), s.shape, s.dtype) };
  });
  await optimizer.setWeights(named);
  for (const n of named) n.tensor.dispose(); // setWeights copied them into variables
}

function makeOptimizer(recipe: Recipe, lr: number): tf.Optimizer {
  const o = recipe.optimizer;
  if (o.kind === 'sgd') return tf.train.momentum(lr, o.momentum);
  return tf.train.adam(lr);
}

function learningRate(recipe: Recipe, epoch: number): number {
  const base = recipe.optimizer.lr;
  const s = recipe.schedule;
  if (s.kind === 'cosine') return s.minLr + 0.5 * (base - s.minLr) * (1 + Math.cos((Math.PI * (epoch - 1)) / recipe.epochs));
  if (s.kind === 'step') return base * s.gamma ** Math.floor((epoch - 1) / s.everyEpochs);
  return base;
}

export async function train(recipe: Readonly<Recipe>, options: TrainOptions = {}): Promise<RunResult> {
  const cleanup: Array<() => Promise<void>> = [];
  try {
    return await run(recipe, options, cleanup);
  } finally {
    for (const c of cleanup) await c();
  }
}

async function run(recipe: Readonly<Recipe>, options: TrainOptions, cleanup: Array<() => Promise<void>>): Promise<RunResult> {
  const runDir = join(recipe.out, recipe.name);
  await mkdir(runDir, { recursive: true });
  await rm(join(runDir, 'run.json'), { force: true }); // no stale success marker
  const dataset = await DatasetReader.open(recipe.data.train);
  const test = recipe.data.test === undefined ? undefined : await DatasetReader.open(recipe.data.test);
  const calibrationData = recipe.calibration === undefined ? undefined : await DatasetReader.open(recipe.calibration.data);
  let distill: Distill = recipe.distill;
  if (distill.method === 'scratch' && recipe.selfDistill !== undefined) distill = { method: 'kd', params: { temperature: recipe.selfDistill.temperature } };
  const onlineModel = recipe.teachers.flatMap((t) => ('onnx' in t ? [t.onnx] : []))[0];
  const cacheDirs = await Promise.all(recipe.teachers.flatMap((t) => ('onnx' in t ? [] : [resolveCacheDir(t, recipe.caches, dataset)])));
  const caches = await Promise.all(cacheDirs.map((dir) => LogitCacheReader.open(dir)));
  let plan = await planTeachers(caches, dataset, distill, recipe.union);
  if (calibrationData !== undefined && plan.mode !== 'union' && calibrationData.info.classes.join('\u0000') !== plan.classes.join('\u0000')) {
    throw new TrainingError(`calibration data ${recipe.calibration!.data} has classes [${calibrationData.info.classes.join(', ')}], the student predicts [${plan.classes.join(', ')}]`);
  }
  let balance: Record<string, unknown> | undefined;
  if (recipe.unionPrior !== undefined && recipe.union !== 'balanced') throw new TrainingError('unionPrior is only used with union: balanced');
  if (recipe.union === 'balanced' && plan.mode === 'union') {
    const U = plan.classes.length;
    if (recipe.unionPrior !== undefined && recipe.unionPrior.length !== U) {
      throw new TrainingError(`unionPrior has ${recipe.unionPrior.length} shares but the teachers' union has ${U} classes (${plan.classes.join(', ')})`);
    }
    const sample = await mergedLogitSample(plan.caches, plan.classIndex, U, await dataset.countRows());
    const sharesMerged = meanSoftmax(sample.logits, sample.rows, U, new Float64Array(U)); // plain concatenation, as union: merged sees it
    const scales = equaliseSpread(sample.logits, sample.rows, U, plan.classIndex);
    const fit = balanceOffsets(sample.logits, sample.rows, U, recipe.unionPrior === undefined ? {} : { prior: recipe.unionPrior });
    plan = { ...plan, scales: Float32Array.from(scales), offsets: Float32Array.from(fit.offsets) };
    const round = (a: Float64Array): number[] => Array.from(a, (v) => Math.round(v * 1e4) / 1e4);
    balance = { classes: plan.classes, teacherScales: round(scales), offsets: round(fit.offsets), sharesMerged: round(sharesMerged), sharesRescaled: round(fit.sharesBefore), sharesAfter: round(fit.sharesAfter), iterations: fit.iterations, residual: fit.residual, rows: sample.rows, stride: sample.stride };
  }
  const online = onlineModel === undefined ? undefined : await OnlineTeacher.open(onlineModel, dataset.info);
  if (online !== undefined) {
    cleanup.push(() => online.release());
    if (online.classes.length !== dataset.info.classes.length) {
      throw new TrainingError(`online teacher ${onlineModel} has ${online.classes.length} classes but the dataset and student have ${dataset.info.classes.length}`);
    }
    plan = { ...plan, layout: { inputSize: dataset.inputSize, slots: [{ kind: 'dense', classes: online.classes.length }] }, mode: 'single' };
  }
  const trainRows = await dataset.countRows();
  const C = plan.classes.length;
  const D = dataset.inputSize;

  // Semi-supervised pool: its label-job cache fills teacher slot 0.
  let pool: SourceSpec | undefined;
  if (recipe.semi !== undefined) {
    const poolData = await DatasetReader.open(recipe.semi.pool);
    const poolDir = await resolveCacheDir(recipe.semi.cache === undefined ? { teacher: recipe.semi.teacher! } : { cache: recipe.semi.cache }, recipe.caches, poolData, { labelStatistics: true });
    cacheDirs.push(poolDir);
    const poolCache = await LogitCacheReader.open(poolDir);
    if (!poolCache.manifest.labelStatistics) throw new TrainingError(`${poolDir} has no pseudo-label columns: build it with a label job`);
    if (poolCache.classes.length !== C) throw new TrainingError(`pool cache has ${poolCache.classes.length} classes but the student has ${C}`);
    if (poolCache.manifest.storage.mode !== 'dense') throw new TrainingError('the semi-supervised pool cache must be dense');
    if (plan.mode === 'none') plan = { ...plan, layout: { inputSize: D, slots: [{ kind: 'dense', classes: C }] }, mode: 'single' };
    if (plan.layout.slots.length !== 1) throw new TrainingError('semi-supervised training takes at most one teacher cache for the labelled set');
    pool = { dataset: poolData, caches: [poolCache], rows: await poolData.countRows(), pseudo: { threshold: recipe.semi.threshold, hard: recipe.semi.targets === 'hard' } };
  }

  const buildSources = (): SourceSpec[] => {
    const lm = labelMapFor(dataset.info.classes, plan.classes, plan.mode);
    const main: SourceSpec = { dataset, caches: plan.caches, rows: trainRows, ...(lm === undefined ? {} : { labelMap: lm }) };
    return pool === undefined ? [main] : [main, pool];
  };

  // The TF.js backend is chosen once the data and teachers check out, so that a recipe error is
  // reported before any backend probing (and its native warnings).
  const backend = await selectBackend(recipe.backend);
  let model: tf.LayersModel;
  let startEpoch = 1;
  // Each epoch's checkpoint (weights + optimizer state) goes to its own directory; checkpoint.json,
  // written atomically afterwards, names the complete one. Older ones are then removed.
  let resumeFrom: string | undefined;
  if (options.resume === true) {
    let state: { epoch: number; dir?: string };
    try {
      state = JSON.parse(await readFile(join(runDir, 'checkpoint.json'), 'utf8')) as { epoch: number; dir?: string };
    } catch {
      throw new TrainingError(`--resume: ${runDir} has no checkpoint`);
    }
    resumeFrom = join(runDir, state.dir ?? 'checkpoint');
    model = await loadLayersModel(resumeFrom);
    startEpoch = state.epoch + 1;
  } else {
    model = await buildStudent(recipe.student, dataset.info.inputShape, C, recipe.seed);
    await rm(join(runDir, 'metrics.jsonl'), { force: true });
    await rm(join(runDir, 'checkpoint.json'), { force: true });
  }
  const outClasses = model.outputs[0]!.shape.at(-1);
  if (outClasses !== C) throw new TrainingError(`the student has ${outClasses} outputs but the teachers/dataset have ${C} classes`);
  if (calibrationData !== undefined) {
    try {
      logitLayer(model); // before training, not after: calibration must be able to rescale the logits
    } catch (err) {
      throw new TrainingError(`calibration: ${(err as Error).message}`);
    }
  }
  await writeFile(join(runDir, 'recipe.json'), JSON.stringify(recipe, null, 2));

  const optimizer = makeOptimizer(recipe, recipe.optimizer.lr);
  if (resumeFrom !== undefined) await loadOptimizerState(optimizer, resumeFrom);
  const metrics: EpochMetrics[] = [];
  if (options.resume === true) {
    const old = await readFile(join(runDir, 'metrics.jsonl'), 'utf8').catch(() => '');
    for (const line of old.split('\n').filter(Boolean)) {
      const m = JSON.parse(line) as EpochMetrics;
      if (m.epoch < startEpoch) metrics.push(m);
    }
    await writeFile(join(runDir, 'metrics.jsonl'), metrics.map((m) => `${JSON.stringify(m)}\n`).join(''));
  }
  const T = temperatureOf(distill);
  const weightDecay = recipe.optimizer.weightDecay;

  for (let epoch = startEpoch; epoch <= recipe.epochs; epoch++) {
    // Self-distillation: from this epoch on, the student's own snapshot is the teacher.
    if (recipe.selfDistill !== undefined && epoch === recipe.selfDistill.fromEpoch) {
      const cache = await snapshotTeacher(model, dataset, plan.classes, join(runDir, 'self-cache'), recipe.selfDistill.temperature, epoch);
      plan = await planTeachers([cache], dataset, distill);
    }
    const lr = learningRate(recipe, epoch);
    (optimizer as unknown as { learningRate: number }).learningRate = lr;
    const useKd = plan.mode !== 'none' && (recipe.selfDistill === undefined || epoch >= recipe.selfDistill.fromEpoch);
    const kdWeight = useKd ? recipe.weights.kd * (recipe.warmupEpochs > 0 ? Math.min(1, epoch / recipe.warmupEpochs) : 1) : 0;
    options.onEpochStart?.(epoch, recipe.epochs, trainRows + (pool?.rows ?? 0));
    const sums: Record<string, number> = {};
    let seen = 0;
    let correct = 0;
    let labelled = 0;
    let agree = 0;
    let agreeRows = 0;
    const t0 = performance.now();
    let batchIndex = 0;
    const batches = prefetch(epochBatches(buildSources(), plan.layout, { batchSize: recipe.batchSize, shuffleBuffer: recipe.shuffleBuffer, seed: recipe.seed * 1000 + epoch, shuffle: true }));
    for await (const fromData of batches) {
      batchIndex++;
      const b = online !== undefined && kdWeight > 0 ? await online.fill(fromData) : fromData;
      const { terms, logits } = step(model, optimizer, b, plan, distill, recipe.weights.ce, kdWeight, T, weightDecay, lr);
      const values = await Promise.all(Object.entries(terms).map(async ([k, v]) => [k, (await v.data())[0]!] as const));
      for (const [k, v] of values) {
        if (!Number.isFinite(v)) {
          throw new TrainingError(`loss term "${k}" became ${v} at epoch ${epoch}, batch ${batchIndex} (lower the learning rate, or check the cache for extreme logits)`);
        }
        sums[k] = (sums[k] ?? 0) + v * b.rows;
      }
      const predT = tf.argMax(logits, 1);
      const pred = (await predT.data()) as Int32Array;
      predT.dispose();
      for (let r = 0; r < b.rows; r++) {
        const y = b.labels[r]!;
        if (y >= 0) {
          labelled++;
          if (pred[r] === y) correct++;
        }
        const s0 = plan.layout.slots[0];
        if (s0?.kind === 'dense' && b.hasTeacher[r] === 1 && plan.mode === 'single') {
          const t = b.slots[0]!.logits;
          let best = 0;
          for (let c = 1; c < C; c++) if (t[r * C + c]! > t[r * C + best]!) best = c;
          agreeRows++;
          if (best === pred[r]) agree++;
        }
      }
      tf.dispose([...Object.values(terms), logits]);
      seen += b.rows;
      options.onBatch?.(seen);
    }
    const seconds = (performance.now() - t0) / 1000;
    const testEval = test === undefined ? undefined : await evaluate(model, { dataset: test, caches: [], rows: 0, ...(plan.mode === 'union' ? { labelMap: labelMapFor(test.info.classes, plan.classes, plan.mode)! } : {}) }, { inputSize: D, slots: [] });
    const m: EpochMetrics = {
      epoch,
      lr,
      kdWeight,
      loss: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / Math.max(1, seen)])),
      ...(labelled === 0 ? {} : { trainAccuracy: correct / labelled }),
      ...(testEval === undefined ? {} : { testAccuracy: testEval.accuracy, ece: testEval.ece }),
      ...(agreeRows > 0 ? { agreement: agree / agreeRows } : {}),
      seconds,
      samplesPerSecond: seen / seconds,
    };
    metrics.push(m);
    await appendFile(join(runDir, 'metrics.jsonl'), `${JSON.stringify(m)}\n`);
    const checkpoint = `checkpoint-${epoch}`;
    await rm(join(runDir, checkpoint), { recursive: true, force: true });
    await saveLayersModel(model, join(runDir, checkpoint));
    await saveOptimizerState(optimizer, join(runDir, checkpoint));
    await writeFileAtomic(join(runDir, 'checkpoint.json'), JSON.stringify({ epoch, dir: checkpoint }));
    for (const old of await readdir(runDir)) {
      if ((old.startsWith('checkpoint-') && old !== checkpoint) || old === 'checkpoint') await rm(join(runDir, old), { recursive: true, force: true });
    }
    options.onEpochEnd?.(m);
  }

  let calibration: RunResult['calibration'];
  if (calibrationData !== undefined) {
    const source = { dataset: calibrationData, caches: [], rows: 0, ...(plan.mode === 'union' ? { labelMap: labelMapFor(calibrationData.info.classes, plan.classes, plan.mode)! } : {}) };
    const layout = { inputSize: D, slots: [] };
    const before = await evaluate(model, source, layout);
    const { logits, labels, classes } = await collectLogits(model, source, layout);
    const fit = fitTemperature(logits, labels, classes);
    scaleLogits(model, 1 / fit.temperature);
    const after = await evaluate(model, source, layout);
    calibration = { data: recipe.calibration!.data, rows: fit.rows, temperature: fit.temperature, nllBefore: fit.nllBefore, nllAfter: fit.nllAfter, eceBefore: before.ece, eceAfter: after.ece };
  }
  await saveLayersModel(model, join(runDir, 'model'));
  const testSource = test === undefined ? undefined : { dataset: test, caches: [], rows: 0, ...(plan.mode === 'union' ? { labelMap: labelMapFor(test.info.classes, plan.classes, plan.mode)! } : {}) };
  const finalEval = testSource === undefined ? undefined : await evaluate(model, testSource, { inputSize: D, slots: [] });
  const parameters = model.countParams();
  const latencyMs = await singleSampleLatencyMs(model, D);
  let onnx: RunResult['onnx'];
  if (options.skipExport !== true) onnx = await exportAndCheck(model, join(runDir, 'student.onnx'), D, plan.classes, test ?? dataset);
  const summary = {
    backend: `${backend.name} (${backend.detail})`,
    method: distill.method,
    student: recipe.student.kind,
    parameters,
    'latency, 1 sample (ms)': latencyMs.toFixed(3),
    ...(finalEval === undefined ? {} : { 'test accuracy': `${(finalEval.accuracy * 100).toFixed(2)}%`, 'test ECE': `${(finalEval.ece * 100).toFixed(2)}%` }),
    ...(onnx === undefined ? {} : { 'ONNX vs TF.js max |Δ|': onnx.maxAbsDiff.toExponential(2) }),
    ...(calibration === undefined ? {} : { 'calibration τ (NLL, ECE on its set: before → after)': `${calibration.temperature.toFixed(3)} (${calibration.nllBefore.toFixed(4)} → ${calibration.nllAfter.toFixed(4)}, ${(calibration.eceBefore * 100).toFixed(2)}% → ${(calibration.eceAfter * 100).toFixed(2)}%)` }),
    ...(balance === undefined ? {} : { 'union: balanced offsets': plan.classes.map((c, k) => `${c} ${(balance!['offsets'] as number[])[k]!.toFixed(2)}`).join(', ') }),
  };
  await writeFile(
    join(runDir, 'report.html'),
    renderReport({ name: recipe.name, recipe, metrics, ...(finalEval === undefined ? {} : { reliability: { bins: finalEval.reliability, ece: finalEval.ece } }), summary }),
  );
  const result: RunResult = { runDir, backend, metrics, ...(finalEval === undefined ? {} : { test: finalEval }), parameters, latencyMs, ...(onnx === undefined ? {} : { onnx }), ...(calibration === undefined ? {} : { calibration }) };
  await writeFileAtomic(join(runDir, 'run.json'), JSON.stringify({ ...result, classes: plan.classes, caches: cacheDirs, ...(balance === undefined ? {} : { unionBalance: balance }) }, null, 2));
  return result;
}

function step(
  model: tf.LayersModel,
  optimizer: tf.Optimizer,
  b: TrainBatch,
  plan: TeacherPlan,
  distill: Distill,
  ceWeight: number,
  kdWeight: number,
  T: number,
  weightDecay: number,
  lr: number,
): { terms: LossTerms; logits: tf.Tensor2D } {
  const C = plan.classes.length;
  const terms: LossTerms = {};
  let logitsOut: tf.Tensor2D | undefined;
  const x = tf.tensor2d(b.x, [b.rows, plan.layout.inputSize]);
  const y = tf.tensor1d(b.labels, 'int32');
  const teacherRows = Array.from(b.hasTeacher.keys()).filter((r) => b.hasTeacher[r] === 1);
  const trainable = model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val);
  const { value, grads } = tf.variableGrads(() => {
    const logits = model.apply(x, { training: true }) as tf.Tensor2D;
    logitsOut = tf.keep(logits.clone());
    let total = tf.scalar(0);
    if (ceWeight > 0) {
      const ce = crossEntropyLoss(logits, y);
      terms['ce'] = tf.keep(ce.clone());
      total = tf.add(total, tf.mul(ce, ceWeight));
    }
    if (kdWeight > 0 && plan.mode !== 'none' && teacherRows.length > 0) {
      const all = teacherRows.length === b.rows;
      const idx = tf.tensor1d(teacherRows, 'int32');
      // Rows with a teacher, selected by a one-hot matrix product when only some have one
      // (gather's gradient needs UnsortedSegmentSum, which the wasm backend lacks).
      const rowsOf = (t: tf.Tensor2D): tf.Tensor2D => (all ? t : (tf.matMul(tf.oneHot(idx, b.rows).toFloat(), t) as tf.Tensor2D));
      const s = rowsOf(logits);
      const ys = all ? y : (tf.gather(y, idx) as tf.Tensor1D);
      let kd: tf.Scalar;
      if (plan.mode === 'union' && plan.union !== 'subsets') {
        // Disjoint class lists (checked when planning): scatter each teacher's logits into the union, plus the balancing offsets.
        const U = plan.classes.length;
        const merged = new Float32Array(b.rows * U);
        const offsets = plan.offsets ?? new Float32Array(U);
        b.slots.forEach((slot, i) => {
          const positions = plan.classIndex[i]!;
          const Ci = positions.length;
          const scale = plan.scales?.[i] ?? 1;
          for (let r = 0; r < b.rows; r++) for (let c = 0; c < Ci; c++) merged[r * U + positions[c]!] = slot.logits[r * Ci + c]! * scale + offsets[positions[c]!]!;
        });
        kd = kdLoss(s, tf.gather(tf.tensor2d(merged, [b.rows, U]), idx) as tf.Tensor2D, { temperature: T });
      } else if (plan.mode === 'union') {
        kd = multiTeacherLoss(s, b.slots.map((slot, i) => ({ logits: tf.gather(tf.tensor2d(slot.logits, [b.rows, plan.classIndex[i]!.length]), idx), classIndex: plan.classIndex[i]! }) as { logits: tf.Tensor2D; classIndex: number[] }), { temperature: T });
      } else if (plan.layout.slots[0]!.kind === 'topk') {
        const spec = plan.layout.slots[0] as { kind: 'topk'; k: number };
        const slot = b.slots[0]!;
        kd = topKKdLoss(s, {
          indices: tf.gather(tf.tensor2d(slot.indices!, [b.rows, spec.k], 'int32'), idx) as tf.Tensor2D,
          logits: tf.gather(tf.tensor2d(slot.logits, [b.rows, spec.k]), idx) as tf.Tensor2D,
          logsumexp: tf.gather(tf.tensor1d(slot.logsumexp!), idx) as tf.Tensor1D,
        }, { temperature: T });
      } else {
        // Several teachers over the same classes: average their probabilities, i.e. use the log of the mean softmax as logits.
        const teachers = b.slots.map((slot) => tf.gather(tf.tensor2d(slot.logits, [b.rows, C]), idx) as tf.Tensor2D);
        const t = teachers.length === 1 ? teachers[0]! : (tf.log(tf.div(tf.addN(teachers.map((z) => tf.softmax(tf.div(z, T)))), teachers.length)).mul(T) as tf.Tensor2D);
        if (distill.method === 'scratch') throw new TrainingError('internal: scratch method with a teacher');
        kd = dense[distill.method](s, t, ys, distill.params);
      }
      terms['kd'] = tf.keep(kd.clone());
      total = tf.add(total, tf.mul(kd, kdWeight));
    }
    terms['total'] = tf.keep(total.clone());
    return total as tf.Scalar;
  }, trainable);
  optimizer.applyGradients(grads);
  // Decoupled weight decay (Loshchilov & Hutter, AdamW) on weight matrices, applied after the
  // step for every optimizer kind.
  if (weightDecay > 0) {
    tf.tidy(() => {
      for (const v of trainable) if (v.shape.length > 1) v.assign(tf.mul(v, 1 - lr * weightDecay));
    });
  }
  tf.dispose([x, y, value, ...Object.values(grads)]);
  return { terms, logits: logitsOut! };
}

/** Run the student over the training set and cache its logits as a teacher (self-distillation). */
async function snapshotTeacher(model: tf.LayersModel, dataset: DatasetReader, classes: readonly string[], root: string, temperature: number, epoch: number): Promise<LogitCacheReader> {
  const weights = model.getWeights().map((w) => w.dataSync());
  let h = 0;
  for (const w of weights) for (let i = 0; i < w.length; i += 997) h = (Math.imul(h, 31) + Math.round(w[i]! * 1e6)) | 0;
  const sha = (await import('node:crypto')).createHash('sha256').update(`self-distill:${epoch}:${h}`).digest('hex');
  const rows = await dataset.countRows();
  const writer = await LogitCacheWriter.open({
    root,
    teacher: { name: `self@epoch${epoch}`, sha256: sha, classes: [...classes] },
    dataset: { fingerprint: await dataset.fingerprint(), rows },
    preprocessing: JSON.stringify(dataset.info.scaling),
    temperature,
    storage: { mode: 'dense', dtype: 'float32' },
  });
  const D = dataset.inputSize;
  const { scale, offset } = dataset.info.scaling;
  try {
    for await (const b of dataset) {
      const x = new Float32Array(b.rows * D);
      for (let i = 0; i < x.length; i++) x[i] = b.inputs[i]! * scale + offset;
      const z = tf.tidy(() => model.predict(tf.tensor2d(x, [b.rows, D])) as tf.Tensor2D);
      await writer.append({ ids: b.ids, logits: (await z.data()) as Float32Array });
      z.dispose();
    }
    const m = await writer.finish();
    return LogitCacheReader.open(join(root, m.key));
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Export to ONNX and check onnxruntime's logits against TF.js on real samples (≤ 1e-4). */
export async function exportAndCheck(model: tf.LayersModel, path: string, D: number, classes: readonly string[], data: DatasetReader): Promise<{ path: string; maxAbsDiff: number }> {
  const bytes = exportOnnx(model, { classes });
  await writeFile(path, bytes);
  let first: DatasetBatch | undefined;
  for await (const b of data) {
    first = b; // the loop's exit closes the reader's file handle
    break;
  }
  if (first === undefined) throw new TrainingError('cannot check the ONNX export: empty dataset');
  const n = Math.min(64, first.rows);
  const { scale, offset } = data.info.scaling;
  const x = new Float32Array(n * D);
  for (let i = 0; i < x.length; i++) x[i] = first.inputs[i]! * scale + offset;
  const wantT = tf.tidy(() => model.predict(tf.tensor2d(x, [n, D])) as tf.Tensor);
  const want = (await wantT.data()) as Float32Array;
  wantT.dispose();
  const session = await OrtSession.create(bytes, { provider: 'cpu' });
  try {
    const got = (await session.run('input', x, [n, D], 'logits')).data;
    let maxAbsDiff = 0;
    for (let i = 0; i < want.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i]! - want[i]!));
    if (!(maxAbsDiff <= 1e-4)) throw new TrainingError(`ONNX export disagrees with TF.js: max |Δ| = ${maxAbsDiff} > 1e-4`);
    return { path, maxAbsDiff };
  } finally {
    await session.release();
  }
}
