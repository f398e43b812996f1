/**
 * `train(recipe)`: the whole run. Streams the dataset and caches, trains the student on the
 * recipe's engine with the recipe's loss, evaluates every epoch, checkpoints, and finally writes
 * student.onnx (checked in a fresh onnxruntime session against the engine's own logits),
 * report.html and run.json — run.json last, so a directory without it never claims success.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, LogitCacheReader, imageGeometry, writeFileAtomic } from '@distillate/shared';
import type { BackendChoice } from './backend.js';
import { batchLoss } from './batch-loss.js';
import { resolveCacheDir } from './cache-ref.js';
import { fitTemperature } from './calibration.js';
import { clearRun, findResumePoint, keptMetrics, saveEpoch } from './checkpoint.js';
import { BatchPool, epochBatches, prefetch, type AugmentOptions, type BatchLayout, type SourceSpec, type TrainBatch } from './data.js';
import {
  flatBatch,
  flatPredict,
  LOGITS,
  intraOpThreads,
  openEngine,
  type BatchLoss,
  type EngineName,
  type StoredInput,
  type StudentEngine,
} from './engine/index.js';
import { TrainingError } from './errors.js';
import { collectLogits, evaluate, type Evaluation } from './evaluate.js';
import { exportStudent, type ExportCheck } from './export-check.js';
import { OnlineTeacher } from './online-teacher.js';
import type { Distill, Recipe } from './recipe.js';
import { renderReport, type EpochMetrics } from './report.js';
import { kdWeight as kdWeightOf, learningRate } from './schedule.js';
import { resumeSnapshot, snapshotTeacher } from './self-distill.js';
import { balanceUnion, hintFeatureIndices, labelMapFor, planTeachers, temperatureOf, type TeacherPlan } from './teacher-plan.js';

/** What a group's batch inputs may take, held once in the batches and once stacked for the run. */
export const GROUP_INPUT_BYTES = 64 << 20;

/**
 * Steps per session run: the recipe's `stepsPerRun`, fewer when that many batches' inputs would
 * pass GROUP_INPUT_BYTES (a 128-row batch of 224×224×3 float images is 77 MB: one step per run).
 */
export function stepsPerRunFor(stepsPerRun: number, batchInputBytes: number): number {
  return Math.max(1, Math.min(stepsPerRun, Math.floor(GROUP_INPUT_BYTES / Math.max(1, batchInputBytes))));
}

export { TrainingError } from './errors.js';

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
  /** The engine that trained the student and what ran it (ORT execution provider or TF.js backend). */
  readonly engine: { readonly name: EngineName; readonly device: string; readonly skipped: readonly string[] };
  /** The TF.js backend, on the tfjs engine (the ort engine uses none). */
  readonly backend?: BackendChoice;
  readonly metrics: readonly EpochMetrics[];
  readonly test?: Evaluation;
  readonly parameters: number;
  readonly latencyMs: number;
  readonly onnx?: ExportCheck;
  /** Post-hoc temperature scaling (recipe `calibration`): τ, and NLL/ECE on the calibration set before and after. */
  readonly calibration?: {
    readonly data: string;
    readonly rows: number;
    readonly temperature: number;
    readonly nllBefore: number;
    readonly nllAfter: number;
    readonly eceBefore: number;
    readonly eceAfter: number;
  };
}

export async function train(recipe: Readonly<Recipe>, options: TrainOptions = {}): Promise<RunResult> {
  const cleanup: Array<() => Promise<void>> = [];
  try {
    return await run(recipe, options, cleanup);
  } finally {
    for (const c of cleanup.reverse()) await c();
  }
}

/** Datasets, teachers and pool of a run, checked before any engine starts. */
interface RunInputs {
  readonly dataset: DatasetReader;
  readonly test?: DatasetReader;
  readonly calibrationData?: DatasetReader;
  readonly distill: Distill;
  readonly plan: TeacherPlan;
  readonly balance?: Record<string, unknown>;
  readonly online?: OnlineTeacher;
  readonly pool?: SourceSpec;
  readonly cacheDirs: string[];
}

async function openInputs(recipe: Readonly<Recipe>, cleanup: Array<() => Promise<void>>): Promise<RunInputs> {
  const dataset = await DatasetReader.open(recipe.data.train);
  const test = recipe.data.test === undefined ? undefined : await DatasetReader.open(recipe.data.test);
  const calibrationData = recipe.calibration === undefined ? undefined : await DatasetReader.open(recipe.calibration.data);
  let distill: Distill = recipe.distill;
  if (distill.method === 'scratch' && recipe.selfDistill !== undefined) distill = { method: 'kd', params: { temperature: recipe.selfDistill.temperature } };
  const onlineModel = recipe.teachers.flatMap((t) => ('onnx' in t ? [t.onnx] : []))[0];
  // The first cache serves the hints' teacher features.
  const hinted = (distill.hints ?? []).map((h) => h.teacher);
  const cacheDirs = await Promise.all(
    recipe.teachers.flatMap((t, i) => ('onnx' in t ? [] : [resolveCacheDir(t, recipe.caches, dataset, i === 0 ? { features: hinted } : {})])),
  );
  const caches = await Promise.all(cacheDirs.map((dir) => LogitCacheReader.open(dir)));
  let plan = await planTeachers(caches, dataset, distill, recipe.union);
  if (calibrationData !== undefined && plan.mode !== 'union' && calibrationData.info.classes.join('\u0000') !== plan.classes.join('\u0000')) {
    throw new TrainingError(
      `calibration data ${recipe.calibration!.data} has classes [${calibrationData.info.classes.join(', ')}], the student predicts [${plan.classes.join(', ')}]`,
    );
  }
  if (recipe.augment !== undefined) {
    try {
      imageGeometry(dataset.info);
    } catch (err) {
      throw new TrainingError(`augment: ${(err as Error).message}`);
    }
  }
  const balanced = await balanceUnion(plan, recipe, dataset);
  plan = balanced.plan;
  const online = onlineModel === undefined ? undefined : await OnlineTeacher.open(onlineModel, dataset.info, { intraOpThreads: intraOpThreads(recipe) });
  if (online !== undefined) {
    cleanup.push(() => online.release());
    if (online.classes.length !== dataset.info.classes.length) {
      throw new TrainingError(
        `online teacher ${onlineModel} has ${online.classes.length} classes but the dataset and student have ${dataset.info.classes.length}`,
      );
    }
    plan = { ...plan, layout: { inputSize: dataset.inputSize, slots: [{ kind: 'dense', classes: online.classes.length }] }, mode: 'single' };
  }
  // Semi-supervised pool: its label-job cache fills teacher slot 0.
  let pool: SourceSpec | undefined;
  if (recipe.semi !== undefined) {
    const C = plan.classes.length;
    const poolData = await DatasetReader.open(recipe.semi.pool);
    const poolDir = await resolveCacheDir(
      recipe.semi.cache === undefined ? { teacher: recipe.semi.teacher! } : { cache: recipe.semi.cache },
      recipe.caches,
      poolData,
      { labelStatistics: true, features: hinted },
    );
    cacheDirs.push(poolDir);
    const poolCache = await LogitCacheReader.open(poolDir);
    if (!poolCache.manifest.labelStatistics) throw new TrainingError(`${poolDir} has no pseudo-label columns: build it with a label job`);
    if (poolCache.classes.length !== C) throw new TrainingError(`pool cache has ${poolCache.classes.length} classes but the student has ${C}`);
    if (poolCache.manifest.storage.mode !== 'dense') throw new TrainingError('the semi-supervised pool cache must be dense');
    if (plan.mode === 'none') plan = { ...plan, layout: { inputSize: dataset.inputSize, slots: [{ kind: 'dense', classes: C }] }, mode: 'single' };
    if (plan.layout.slots.length !== 1) throw new TrainingError('semi-supervised training takes at most one teacher cache for the labelled set');
    // Hints: the pool's rows read the same features from its label cache (built with the same --feature flags).
    const featureIndex = plan.hints === undefined || plan.hints.length === 0 ? undefined : hintFeatureIndices(poolCache, plan.hints);
    pool = {
      dataset: poolData,
      caches: [poolCache],
      rows: await poolData.countRows(),
      pseudo: { threshold: recipe.semi.threshold, hard: recipe.semi.targets === 'hard' },
      ...(featureIndex === undefined ? {} : { featureIndex }),
    };
  }
  return {
    dataset,
    ...(test === undefined ? {} : { test }),
    ...(calibrationData === undefined ? {} : { calibrationData }),
    distill,
    plan,
    ...(balanced.balance === undefined ? {} : { balance: balanced.balance }),
    ...(online === undefined ? {} : { online }),
    ...(pool === undefined ? {} : { pool }),
    cacheDirs,
  };
}

/**
 * The stored input the run's datasets share, offered to the engine: every dataset it reads
 * (training, test, calibration, pool) stores uint8 values with the same scaling, and no online
 * teacher reads the batches (it takes scaled values).
 */
function storedInputOf(inputs: RunInputs): StoredInput | undefined {
  const { scale, offset } = inputs.dataset.info.scaling;
  const all = [inputs.dataset, inputs.test, inputs.calibrationData, inputs.pool?.dataset].filter((d) => d !== undefined);
  const same = all.every((d) => d.info.inputType === 'uint8' && d.info.scaling.scale === scale && d.info.scaling.offset === offset);
  return same && inputs.online === undefined ? { scale, offset } : undefined;
}

/** A labelled dataset as an evaluation source, its labels mapped into the student's classes. */
function evalSource(data: DatasetReader, plan: TeacherPlan): SourceSpec {
  const lm = labelMapFor(data.info.classes, plan.classes, plan.mode);
  return { dataset: data, caches: [], rows: 0, ...(lm === undefined ? {} : { labelMap: lm }) };
}

async function run(recipe: Readonly<Recipe>, options: TrainOptions, cleanup: Array<() => Promise<void>>): Promise<RunResult> {
  const runDir = join(recipe.out, recipe.name);
  await mkdir(runDir, { recursive: true });
  await rm(join(runDir, 'run.json'), { force: true }); // no stale success marker
  const inputs = await openInputs(recipe, cleanup);
  const { dataset, test, calibrationData, distill, online, pool } = inputs;
  let plan = inputs.plan;
  const trainRows = await dataset.countRows();
  const C = plan.classes.length;
  const D = dataset.inputSize;
  const buildSources = (): SourceSpec[] => {
    const lm = labelMapFor(dataset.info.classes, plan.classes, plan.mode);
    const main: SourceSpec = { dataset, caches: plan.caches, rows: trainRows, ...(lm === undefined ? {} : { labelMap: lm }) };
    return pool === undefined ? [main] : [main, pool];
  };
  // recipe.augment: epoch e trains on view e − 1 of each image (a fresh draw every epoch).
  const augmentFor = (epoch: number): { augment?: AugmentOptions } => {
    const a = recipe.augment;
    return a === undefined ? {} : { augment: { augment: { shift: a.shift, flip: a.flip }, seed: a.seed ?? recipe.seed, epoch: epoch - 1 } };
  };

  // The engine starts once the data and teachers check out, so a recipe error is reported
  // before any backend or provider probing (and its native warnings).
  const resume = options.resume === true ? await findResumePoint(runDir) : undefined;
  if (resume === undefined) await clearRun(runDir);
  const opened = await openEngine(recipe, dataset.info.inputShape, C, resume?.dir, plan.hints ?? [], storedInputOf(inputs));
  const engine: StudentEngine = opened.engine;
  // The engine scales the stored uint8 values itself when it can: batches then carry bytes.
  const stored = engine.storedInput !== undefined;
  const layoutOf = (l: BatchLayout): BatchLayout => (stored ? { ...l, storedInputs: true } : l);
  const evalLayout = layoutOf({ inputSize: D, slots: [] });
  cleanup.push(() => engine.release());
  if (engine.classes !== C) throw new TrainingError(`the student has ${engine.classes} outputs but the teachers/dataset have ${C} classes`);
  if (calibrationData !== undefined) {
    try {
      engine.checkLogitScaling(); // before training, not after: calibration must be able to rescale the logits
    } catch (err) {
      throw new TrainingError(`calibration: ${(err as Error).message}`);
    }
  }
  await writeFile(join(runDir, 'recipe.json'), JSON.stringify(recipe, null, 2));
  const metrics: EpochMetrics[] = resume === undefined ? [] : await keptMetrics(runDir, resume.startEpoch);
  const T = temperatureOf(distill);
  const selfCache = join(runDir, 'self-cache');
  let snapshotPlanned = false;

  const batchPool = new BatchPool();
  for (let epoch = resume?.startEpoch ?? 1; epoch <= recipe.epochs; epoch++) {
    // Self-distillation: from fromEpoch on, the student's snapshot taken then is the teacher
    // (taken now, or found again when a resumed run starts past it).
    const sd = recipe.selfDistill;
    if (sd !== undefined && epoch >= sd.fromEpoch && !snapshotPlanned) {
      const cache =
        epoch === sd.fromEpoch
          ? await snapshotTeacher(engine, dataset, plan.classes, selfCache, sd.temperature, epoch)
          : await resumeSnapshot(selfCache, sd.fromEpoch);
      plan = await planTeachers([cache], dataset, distill);
      snapshotPlanned = true;
    }
    const lr = learningRate(recipe, epoch);
    const kdWeight = kdWeightOf(recipe, epoch, plan.mode !== 'none' && (sd === undefined || epoch >= sd.fromEpoch));
    options.onEpochStart?.(epoch, recipe.epochs, trainRows + (pool?.rows ?? 0));
    const sums: Record<string, number> = {};
    let seen = 0;
    let correct = 0;
    let labelled = 0;
    let agree = 0;
    let agreeRows = 0;
    const t0 = performance.now();
    let batchIndex = 0;
    const batches = prefetch(
      epochBatches(buildSources(), layoutOf(plan.layout), {
        batchSize: recipe.batchSize,
        shuffleBuffer: recipe.shuffleBuffer,
        seed: recipe.seed * 1000 + epoch,
        shuffle: true,
        pool: batchPool,
        ...augmentFor(epoch),
      }),
    );
    // Batches go to the engine in groups (recipe stepsPerRun) of one row count and loss shape;
    // once a group has trained, its batches go back to the pool (`from`: the batch as read, before an online teacher filled it).
    let group: Array<{ b: TrainBatch; from: TrainBatch; loss: BatchLoss }> = [];
    const flush = async (): Promise<void> => {
      if (group.length === 0) return;
      const results = await engine.steps(
        group.map((g) => ({ batch: flatBatch(engine, g.b.x, g.b.rows), loss: g.loss })),
        lr,
      );
      results.forEach(({ terms, outputs }, k) => {
        const logits = outputs[LOGITS]!;
        const b = group[k]!.b;
        batchIndex++;
        for (const [name, v] of Object.entries(terms)) {
          if (!Number.isFinite(v)) {
            throw new TrainingError(
              `loss term "${name}" became ${v} at epoch ${epoch}, batch ${batchIndex} (lower the learning rate, or check the cache for extreme logits)`,
            );
          }
          sums[name] = (sums[name] ?? 0) + v * b.rows;
        }
        const s0 = plan.layout.slots[0];
        const teacher = s0?.kind === 'dense' && plan.mode === 'single' ? b.slots[0]!.logits : undefined;
        for (let r = 0; r < b.rows; r++) {
          let pred = 0;
          for (let c = 1; c < C; c++) if (logits[r * C + c]! > logits[r * C + pred]!) pred = c;
          const y = b.labels[r]!;
          if (y >= 0) {
            labelled++;
            if (pred === y) correct++;
          }
          if (teacher !== undefined && b.hasTeacher[r] === 1) {
            let best = 0;
            for (let c = 1; c < C; c++) if (teacher[r * C + c]! > teacher[r * C + best]!) best = c;
            agreeRows++;
            if (best === pred) agree++;
          }
        }
        seen += b.rows;
      });
      for (const g of group) batchPool.release(g.from);
      group = [];
      options.onBatch?.(seen);
    };
    for await (const fromData of batches) {
      const b = online !== undefined && kdWeight > 0 ? await online.fill(fromData) : fromData;
      const loss = batchLoss(b, { plan, distill, ceWeight: recipe.weights.ce, kdWeight, temperature: T });
      const head = group[0];
      if (head !== undefined && (head.b.rows !== b.rows || head.loss.key !== loss.key)) await flush();
      group.push({ b, from: fromData, loss });
      if (group.length >= stepsPerRunFor(recipe.stepsPerRun, b.x.byteLength)) await flush();
    }
    await flush();
    const seconds = (performance.now() - t0) / 1000;
    const testEval = test === undefined ? undefined : await evaluate(flatPredict(engine), evalSource(test, plan), evalLayout);
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
    await saveEpoch(runDir, engine, m);
    options.onEpochEnd?.(m);
  }

  const predict = flatPredict(engine);
  let calibration: RunResult['calibration'];
  if (calibrationData !== undefined) {
    const source = evalSource(calibrationData, plan);
    const before = await evaluate(predict, source, evalLayout);
    const { logits, labels, classes } = await collectLogits(predict, C, source, evalLayout);
    const fit = fitTemperature(logits, labels, classes);
    engine.scaleLogits(1 / fit.temperature);
    const after = await evaluate(predict, source, evalLayout);
    calibration = {
      data: recipe.calibration!.data,
      rows: fit.rows,
      temperature: fit.temperature,
      nllBefore: fit.nllBefore,
      nllAfter: fit.nllAfter,
      eceBefore: before.ece,
      eceAfter: after.ece,
    };
  }
  await engine.saveModel(runDir);
  const finalEval = test === undefined ? undefined : await evaluate(predict, evalSource(test, plan), evalLayout);
  const latencyMs = await engine.latencyMs();
  let onnx: ExportCheck | undefined;
  if (options.skipExport !== true) onnx = await exportStudent(engine, plan.classes, predict, join(runDir, 'student.onnx'), test ?? dataset);
  const balance = inputs.balance;
  const summary = {
    engine: `${engine.name} on ${engine.device}`,
    method: distill.method,
    student: recipe.student.kind,
    parameters: engine.parameters,
    'latency, 1 sample (ms)': latencyMs.toFixed(3),
    ...(finalEval === undefined ? {} : { 'test accuracy': `${(finalEval.accuracy * 100).toFixed(2)}%`, 'test ECE': `${(finalEval.ece * 100).toFixed(2)}%` }),
    ...(onnx === undefined ? {} : { 'student.onnx vs engine max |Δ|': onnx.maxAbsDiff.toExponential(2) }),
    ...(calibration === undefined
      ? {}
      : {
          'calibration τ (NLL, ECE on its set: before → after)': `${calibration.temperature.toFixed(3)} (${calibration.nllBefore.toFixed(4)} → ${calibration.nllAfter.toFixed(4)}, ${(calibration.eceBefore * 100).toFixed(2)}% → ${(calibration.eceAfter * 100).toFixed(2)}%)`,
        }),
    ...(balance === undefined
      ? {}
      : { 'union: balanced offsets': plan.classes.map((c, k) => `${c} ${(balance['offsets'] as number[])[k]!.toFixed(2)}`).join(', ') }),
  };
  await writeFile(
    join(runDir, 'report.html'),
    renderReport({
      name: recipe.name,
      recipe,
      metrics,
      ...(finalEval === undefined ? {} : { reliability: { bins: finalEval.reliability, ece: finalEval.ece } }),
      summary,
    }),
  );
  const result: RunResult = {
    runDir,
    engine: { name: engine.name, device: engine.device, skipped: opened.skipped },
    ...(opened.backend === undefined ? {} : { backend: opened.backend }),
    metrics,
    ...(finalEval === undefined ? {} : { test: finalEval }),
    parameters: engine.parameters,
    latencyMs,
    ...(onnx === undefined ? {} : { onnx }),
    ...(calibration === undefined ? {} : { calibration }),
  };
  await writeFileAtomic(
    join(runDir, 'run.json'),
    JSON.stringify(
      {
        ...result,
        classes: plan.classes,
        ...(plan.mode === 'union' ? { union: plan.union } : {}),
        caches: [...inputs.cacheDirs, ...(recipe.selfDistill === undefined ? [] : [selfCache])],
        ...(balance === undefined ? {} : { unionBalance: balance }),
      },
      null,
      2,
    ),
  );
  return result;
}
