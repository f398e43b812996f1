/**
 * Which teachers a run distils from and how: one cache (or several with the same classes,
 * averaged), teachers with different class lists (union modes), or none; the batch layout their
 * logits take; and, for `union: balanced`, the spread factors and class offsets fitted over the
 * caches before training.
 */
import type { DatasetReader, LogitCacheReader, StoredFeature } from '@distillate/shared';
import type { BatchLayout, SlotSpec } from './data.js';
import type { Distill, Recipe } from './recipe.js';
import { hintLosses, type Hint } from './losses/index.js';
import { TrainingError } from './errors.js';
import { balanceOffsets, equaliseSpread, meanSoftmax, mergedLogitSample } from './union-balance.js';

export interface TeacherPlan {
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
  /** distill.hints, each with the stored shape of its teacher feature (from the first cache), in order. */
  readonly hints?: readonly PlannedHint[];
}

export interface PlannedHint {
  readonly hint: Hint;
  /** The teacher feature's stored shape per row. */
  readonly teacherShape: readonly number[];
  /** How it was stored (pooling, grid): another source's cache must hold the same. */
  readonly stored: StoredFeature;
}

/** The index of hint teacher `tensor` among `cache`'s stored features, refused in one line when it is not there exactly once. */
function featureIndex(cache: LogitCacheReader, tensor: string): number {
  const stored = cache.manifest.features ?? [];
  const matches = stored.flatMap((f, index) => (f.tensor === tensor ? [index] : []));
  if (matches.length === 0)
    throw new TrainingError(
      stored.length === 0
        ? `hint teacher ${tensor}: cache ${cache.dir} stores no features (precompute it with --feature ${tensor})`
        : `hint teacher ${tensor}: cache ${cache.dir} stores ${stored.map((f) => `${f.tensor} [${f.shape.join(', ')}]`).join(', ')}`,
    );
  if (matches.length > 1)
    throw new TrainingError(`hint teacher ${tensor}: cache ${cache.dir} stores it ${matches.length} times (pooled differently); hints cannot tell which`);
  return matches[0]!;
}

const describeFeature = (f: StoredFeature): string => `[${f.shape.join(', ')}] (pool ${f.pool}${f.grid === undefined ? '' : `, grid ${f.grid.join('×')}`})`;

/**
 * Where another source's cache (a semi-supervised pool's label cache) holds the planned hints'
 * features: its index of each, in the hints' order. Refused in one line when one is missing or
 * was stored otherwise (another pooling, grid or shape) than in the first cache.
 */
export function hintFeatureIndices(cache: LogitCacheReader, hints: readonly PlannedHint[]): number[] {
  return hints.map(({ hint, stored }) => {
    const index = featureIndex(cache, hint.teacher);
    const other = cache.manifest.features![index]!;
    if (other.pool !== stored.pool || other.shape.join() !== stored.shape.join() || other.grid?.join() !== stored.grid?.join())
      throw new TrainingError(
        `hint teacher ${hint.teacher}: cache ${cache.dir} stores it as ${describeFeature(other)}, the first teacher cache as ${describeFeature(stored)}`,
      );
    return index;
  });
}

/**
 * The hints' teacher features in the first cache: each `hints[].teacher` names one of the
 * manifest's features; refused in one line otherwise (listing what the cache stores).
 */
function planHints(caches: readonly LogitCacheReader[], distill: Distill): { hints: PlannedHint[]; features: { index: number; size: number }[] } {
  const hints = distill.hints ?? [];
  if (hints.length === 0) return { hints: [], features: [] };
  const cache = caches[0];
  if (cache === undefined)
    throw new TrainingError('distill.hints read teacher features from a cache: give teachers: [{ cache }] with features (precompute --feature)');
  const out = hints.map((h) => {
    const index = featureIndex(cache, h.teacher);
    const f = cache.manifest.features![index]!;
    const params = hintLosses[h.loss].params.safeParse(h.params);
    if (!params.success)
      throw new TrainingError(`hint ${h.loss}: params: ${params.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    return { hint: h, teacherShape: f.shape, stored: f, index, size: f.shape.reduce((a, b) => a * b, 1) };
  });
  return { hints: out.map(({ hint, teacherShape, stored }) => ({ hint, teacherShape, stored })), features: out.map(({ index, size }) => ({ index, size })) };
}

import { temperatureOf } from './losses/index.js';

export { temperatureOf };

/**
 * `union` is the recipe's, when it sets one. Left out, teachers with disjoint class lists
 * distilled with kd are `balanced` (the best measured mode: BENCHMARKS.md), others `subsets`.
 */
export async function planTeachers(caches: LogitCacheReader[], dataset: DatasetReader, distill: Distill, chosen?: TeacherPlan['union']): Promise<TeacherPlan> {
  let union: TeacherPlan['union'] = chosen ?? 'subsets';
  const D = dataset.inputSize;
  const datasetClasses = dataset.info.classes;
  if (caches.length === 0) {
    if ((distill.hints ?? []).length > 0) planHints(caches, distill); // refuses: hints need a cache
    return { caches, layout: { inputSize: D, slots: [] }, mode: 'none', classes: datasetClasses, classIndex: [], union, hints: [] };
  }
  const planned = planHints(caches, distill);
  const fingerprint = await dataset.fingerprint();
  for (const c of caches) {
    if (c.manifest.dataset.fingerprint !== fingerprint) {
      throw new TrainingError(
        `cache ${c.dir} was built from dataset ${c.manifest.dataset.fingerprint.slice(0, 12)}…, not ${dataset.path} (${fingerprint.slice(0, 12)}…)`,
      );
    }
  }
  const slots: SlotSpec[] = caches.map((c) => {
    const s = c.manifest.storage;
    if (s.mode === 'sampled' || c.manifest.tokens !== undefined) {
      throw new TrainingError(`cache ${c.dir} is a token cache (a language model's); it trains language-model students, not ${dataset.path}'s classifier`);
    }
    const features = c === caches[0] && planned.features.length > 0 ? { features: planned.features } : {};
    return s.mode === 'dense' ? { kind: 'dense', classes: c.classes.length, ...features } : { kind: 'topk', k: s.k, ...features };
  });
  const lists = caches.map((c) => c.classes);
  const same = lists.every((l) => l.length === lists[0]!.length && l.every((n, i) => n === lists[0]![i]));
  for (const c of caches) {
    if (c.manifest.storage.mode === 'topk') {
      if (distill.method !== 'kd') throw new TrainingError(`cache ${c.dir} is top-k: only distill.method kd supports top-k caches (got ${distill.method})`);
      if (temperatureOf(distill) !== c.manifest.temperature) {
        throw new TrainingError(
          `cache ${c.dir} stores top-${c.manifest.storage.k} logits at T = ${c.manifest.temperature}; set distill.params.temperature to ${c.manifest.temperature}`,
        );
      }
    }
  }
  if (same) {
    if (union !== 'subsets')
      throw new TrainingError(`union: ${union} is for teachers with different (disjoint) class lists; these share one, and are averaged without it`);
    if (lists[0]!.length !== datasetClasses.length) {
      throw new TrainingError(`cache ${caches[0]!.dir} has ${lists[0]!.length} classes but the dataset and student have ${datasetClasses.length}`);
    }
    if (caches.length > 1 && slots.some((s) => s.kind !== 'dense')) throw new TrainingError('averaging several teachers needs dense caches');
    return { caches, layout: { inputSize: D, slots }, mode: 'single', classes: datasetClasses, classIndex: [], union, hints: planned.hints };
  }
  if (slots.some((s) => s.kind !== 'dense')) throw new TrainingError('teachers with different class lists need dense caches');
  const all: string[] = [];
  for (const l of lists) for (const n of l) if (!all.includes(n)) all.push(n);
  const disjoint = all.length === lists.reduce((a, l) => a + l.length, 0);
  if (chosen === undefined && disjoint && distill.method === 'kd') union = 'balanced';
  if (union !== 'subsets') {
    if (!disjoint) throw new TrainingError(`union: ${union} needs teachers with disjoint class lists (a class is in more than one); use union: subsets`);
    if (distill.method !== 'kd') throw new TrainingError(`union: ${union} trains with distill.method kd (got ${distill.method})`);
  }
  return {
    caches,
    layout: { inputSize: D, slots },
    mode: 'union',
    classes: all,
    classIndex: lists.map((l) => l.map((n) => all.indexOf(n))),
    union,
    hints: planned.hints,
  };
}

export function labelMapFor(datasetClasses: readonly string[], union: readonly string[], mode: TeacherPlan['mode']): Int32Array | undefined {
  if (mode !== 'union') return undefined;
  return Int32Array.from(datasetClasses, (n) => union.indexOf(n)); // −1: a class no teacher knows → unlabelled
}

/** union: balanced — fit the per-teacher spread and per-class offsets over the caches; returns the plan with them and the record for run.json. */
export async function balanceUnion(
  plan: TeacherPlan,
  recipe: Readonly<Recipe>,
  dataset: DatasetReader,
): Promise<{ plan: TeacherPlan; balance?: Record<string, unknown> }> {
  let balance: Record<string, unknown> | undefined;
  if (recipe.unionPrior !== undefined && !(plan.mode === 'union' && plan.union === 'balanced'))
    throw new TrainingError('unionPrior is only used with union: balanced');
  if (plan.union === 'balanced' && plan.mode === 'union') {
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
    balance = {
      classes: plan.classes,
      teacherScales: round(scales),
      offsets: round(fit.offsets),
      sharesMerged: round(sharesMerged),
      sharesRescaled: round(fit.sharesBefore),
      sharesAfter: round(fit.sharesAfter),
      iterations: fit.iterations,
      residual: fit.residual,
      rows: sample.rows,
      stride: sample.stride,
    };
  }
  return { plan, ...(balance === undefined ? {} : { balance }) };
}
