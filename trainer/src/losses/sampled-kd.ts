import type { Feed, Ops, Rows } from './ops.js';
import { divideBy, rowMean, times } from './ops.js';

/**
 * KD against a sampled token cache (Anshumann et al. 2025, "Sparse Logit Sampling", ACL): at each
 * position the cache holds n draws from p = softmax(z / T) as distinct ids with counts c, so
 * p̂ = c / n is an unbiased estimate of p and
 *   T² · Σ p̂ · (log p − log q)      (q = softmax(s / T))
 * is an unbiased estimate of T² · KL(p ‖ q), with the gradient of the full KD in expectation.
 * The targets stay sparse: `ids` [N, S] and `weights` [N, S] hold each row's distinct ids and
 * p̂ in S ≥ (distinct ids) slots (unused slots: id 0, weight 0), and log q is read at those ids
 * only; `entropy` [N, 1] is Σ p̂ · log p from the stored log-probabilities, which makes the
 * value (not the gradient) a KL estimate.
 */
export function sampledKd<T>(o: Ops<T>, student: T, t: SampledTargets<T>, rows: Rows<T>, temperature: number): T {
  const logQ = o.logSoftmax(divideBy(o, student, temperature));
  const cross = o.sum(o.mul(t.weights, o.gatherLast(logQ, t.ids)), -1);
  return times(o, rowMean(o, o.sub(t.entropy, cross), rows), temperature * temperature);
}

/** A sampled cache's targets for `sampledKd`: [N, S] ids (as floats) and weights, [N, 1] entropy. */
export interface SampledTargets<T> {
  readonly ids: T;
  readonly weights: T;
  readonly entropy: T;
}

/**
 * The host side of `sampledKd` for `rows` rows (positions), S slots each (S = the draws per
 * position n: a row holds at most n distinct ids): each row's entries are the next `unique[r]`
 * of `indices`, `counts`, `logprobs` from `at`; rows where `use` is 0 stay zero. Returns the
 * index past the last entry read.
 */
export function sampledTargets(
  cache: { readonly unique: ArrayLike<number>; readonly indices: ArrayLike<number>; readonly counts: ArrayLike<number>; readonly logprobs: ArrayLike<number> },
  at: number,
  rows: number,
  n: number,
  into: { ids: Float32Array; weights: Float32Array; entropy: Float32Array; rowOffset: number },
  use?: ArrayLike<number>,
): number {
  const S = n;
  for (let r = 0; r < rows; r++) {
    const k = cache.unique[r]!;
    const row = into.rowOffset + r;
    if (k > S) throw new RangeError(`row ${row} holds ${k} distinct ids, more than its ${S} draws`);
    if (use === undefined || use[r] === 1) {
      let h = 0;
      for (let j = 0; j < k; j++) {
        const w = cache.counts[at + j]! / n;
        into.ids[row * S + j] = cache.indices[at + j]!;
        into.weights[row * S + j] = w;
        h += w * cache.logprobs[at + j]!;
      }
      into.entropy[row] = h;
    }
    at += k;
  }
  return at;
}

export type SampledFeeds = { readonly ids: Feed; readonly weights: Feed; readonly entropy: Feed };
