import type { LogitCacheReader } from '@distillate/shared';

/**
 * Teachers with disjoint class lists (`union: balanced`).
 *
 * Concatenating two separately trained teachers' logits (`union: merged`) lets the teacher with
 * the larger logit scale take most images: each teacher is confident on everything, its own
 * classes or not, and nothing ties one teacher's scale to the other's. `balanced` adds one offset
 * per class of the union so that the merged teacher, averaged over the transfer set, gives every
 * class its prior share (uniform unless given): the fixed point of
 *
 *     b_k ← b_k + log(prior_k / mean_r softmax(z_r + b)_k)
 *
 * after each teacher's logits are rescaled to a common spread (equaliseSpread)
 * (iterative proportional fitting; Sinkhorn's algorithm with the row sums fixed at 1, as in
 * Saerens et al. 2002 for a known prior and Asano et al. 2020's equipartition). The offsets shift
 * the decision between the teachers' classes; within one teacher they cancel only up to the
 * class prior, which is what they are meant to correct. The assumption is the user's: the
 * transfer set holds the classes in these shares.
 */

export interface BalanceOptions {
  /** Target class shares (normalised here); uniform by default. */
  readonly prior?: ArrayLike<number>;
  readonly maxIterations?: number;
  /** Stop when every class's share is within this log-ratio of its target. */
  readonly tolerance?: number;
}

export interface BalanceResult {
  /** Per-class offsets in logit units (mean 0), added to the merged logits. */
  readonly offsets: Float64Array;
  readonly iterations: number;
  /** max_k |log(prior_k / share_k)| at the end. */
  readonly residual: number;
  /** Each class's mean probability under the (rescaled) merged teacher before and after the offsets. */
  readonly sharesBefore: Float64Array;
  readonly sharesAfter: Float64Array;
}

/** Each class's mean probability, softmax(z_r + b), over the rows of a [rows, classes] matrix. */
export function meanSoftmax(logits: Float32Array, rows: number, classes: number, b: Float64Array): Float64Array {
  const share = new Float64Array(classes);
  const e = new Float64Array(classes);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let max = -Infinity;
    for (let k = 0; k < classes; k++) max = Math.max(max, logits[o + k]! + b[k]!);
    let sum = 0;
    for (let k = 0; k < classes; k++) {
      e[k] = Math.exp(logits[o + k]! + b[k]! - max);
      sum += e[k]!;
    }
    for (let k = 0; k < classes; k++) share[k]! += e[k]! / sum;
  }
  for (let k = 0; k < classes; k++) share[k]! /= rows;
  return share;
}

/** The per-class offsets that give the merged teacher the prior's class shares (see above). */
export function balanceOffsets(logits: Float32Array, rows: number, classes: number, options: BalanceOptions = {}): BalanceResult {
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(classes) || classes < 2)
    throw new RangeError(`balanceOffsets: need rows ≥ 1 and classes ≥ 2 (got ${rows}, ${classes})`);
  if (logits.length !== rows * classes) throw new RangeError(`balanceOffsets: ${logits.length} logits for ${rows} × ${classes}`);
  const raw = options.prior === undefined ? new Float64Array(classes).fill(1) : Float64Array.from(options.prior);
  if (raw.length !== classes || raw.some((p) => !(p > 0) || !Number.isFinite(p)))
    throw new RangeError(`balanceOffsets: the prior needs ${classes} positive finite shares`);
  const total = raw.reduce((a, p) => a + p, 0);
  const prior = raw.map((p) => p / total);
  const maxIterations = options.maxIterations ?? 1000;
  const tolerance = options.tolerance ?? 1e-5;
  const b = new Float64Array(classes);
  const sharesBefore = meanSoftmax(logits, rows, classes, b);
  let share = sharesBefore;
  let residual = Infinity;
  let iterations = 0;
  while (iterations < maxIterations) {
    residual = 0;
    for (let k = 0; k < classes; k++) residual = Math.max(residual, Math.abs(Math.log(prior[k]! / share[k]!)));
    if (residual <= tolerance) break;
    // A class no row gives any mass (share underflows to 0) would need an infinite offset: step at most 10 per round.
    for (let k = 0; k < classes; k++) b[k]! += Math.max(-10, Math.min(10, Math.log(prior[k]! / share[k]!)));
    share = meanSoftmax(logits, rows, classes, b);
    iterations++;
  }
  const mean = b.reduce((a, v) => a + v, 0) / classes;
  for (let k = 0; k < classes; k++) b[k]! -= mean;
  return { offsets: b, iterations, residual, sharesBefore, sharesAfter: share };
}

/**
 * One factor per teacher that gives every teacher's logits the same spread: the mean, over the
 * teachers, of the standard deviation of each teacher's logits over the sample. Separately trained
 * teachers differ in scale (label smoothing, training length: a factor of 2 between the shipped
 * halves), and a larger scale wins more images in the merged softmax regardless of which teacher
 * the image belongs to. Multiplies the sample's columns in place and returns the factors.
 */
export function equaliseSpread(logits: Float32Array, rows: number, unionSize: number, classIndex: readonly (readonly number[])[]): Float64Array {
  const stds = classIndex.map((positions) => {
    let sum = 0;
    let sq = 0;
    for (let r = 0; r < rows; r++) {
      for (const k of positions) {
        const v = logits[r * unionSize + k]!;
        sum += v;
        sq += v * v;
      }
    }
    const n = rows * positions.length;
    const mean = sum / n;
    return Math.sqrt(Math.max(0, sq / n - mean * mean));
  });
  if (stds.some((s) => !(s > 0))) throw new RangeError('equaliseSpread: a teacher gives every row the same logits; it carries no information to merge');
  const target = stds.reduce((a, s) => a + s, 0) / stds.length;
  const factors = Float64Array.from(stds, (s) => target / s);
  for (const [i, positions] of classIndex.entries()) {
    for (let r = 0; r < rows; r++) for (const k of positions) logits[r * unionSize + k]! *= factors[i]!;
  }
  return factors;
}

/**
 * The teachers' logits scattered into the union's columns, for a sample of rows: every
 * `stride`-th row, with the stride chosen so that at most `maxValues` floats are held
 * (16 Mi by default: 64 MiB). Caches are over the same dataset rows (checked when planning).
 */
export async function mergedLogitSample(
  caches: readonly LogitCacheReader[],
  classIndex: readonly (readonly number[])[],
  unionSize: number,
  rows: number,
  maxValues = 1 << 24,
): Promise<{ logits: Float32Array; rows: number; stride: number }> {
  const stride = Math.max(1, Math.ceil((rows * unionSize) / maxValues));
  const kept = Math.ceil(rows / stride);
  const out = new Float32Array(kept * unionSize);
  for (const [i, cache] of caches.entries()) {
    const positions = classIndex[i]!;
    const C = positions.length;
    let r = 0;
    for await (const batch of cache.batches({ temperature: 1 })) {
      if (batch.kind !== 'dense') throw new Error('union: balanced needs dense caches');
      for (let j = 0; j < batch.rows; j++, r++) {
        if (r % stride !== 0) continue;
        const o = (r / stride) * unionSize;
        for (let c = 0; c < C; c++) out[o + positions[c]!] = batch.logits[j * C + c]!;
      }
    }
    if (r !== rows) throw new Error(`cache ${cache.dir} has ${r} rows, the dataset ${rows}`);
  }
  return { logits: out, rows: kept, stride };
}
