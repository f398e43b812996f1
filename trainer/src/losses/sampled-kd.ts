import type { Feed, Ops, Rows } from './ops.js';
import { divideBy, rowMean, times } from './ops.js';

/**
 * KD against a sampled token cache (Anshumann et al. 2025, "Sparse Logit Sampling", ACL): at each
 * position the cache holds n draws from p = softmax(z / T) as distinct ids with counts c, so
 * p̂ = c / n is an unbiased estimate of p and
 *   T² · Σ p̂ · (log p − log q)      (q = softmax(s / T))
 * is an unbiased estimate of T² · KL(p ‖ q), with the gradient of the full KD in expectation.
 * `weights` [N, C] is p̂ scattered to its ids (0 elsewhere); `entropy` [N, 1] is Σ p̂ · log p
 * from the stored log-probabilities, which makes the value (not the gradient) a KL estimate.
 */
export function sampledKd<T>(o: Ops<T>, student: T, weights: T, entropy: T, rows: Rows<T>, temperature: number): T {
  const cross = o.sum(o.mul(weights, o.logSoftmax(divideBy(o, student, temperature))), -1);
  return times(o, rowMean(o, o.sub(entropy, cross), rows), temperature * temperature);
}

/**
 * The host side of `sampledKd` for `rows` rows (positions) over C classes: each row's entries
 * are the next `unique[r]` of `indices`, `counts`, `logprobs` from `at`; rows where `use` is 0
 * stay zero. Returns the index past the last entry read.
 */
export function sampledTargets(
  cache: { readonly unique: ArrayLike<number>; readonly indices: ArrayLike<number>; readonly counts: ArrayLike<number>; readonly logprobs: ArrayLike<number> },
  at: number,
  rows: number,
  n: number,
  C: number,
  into: { weights: Float32Array; entropy: Float32Array; rowOffset: number },
  use?: ArrayLike<number>,
): number {
  for (let r = 0; r < rows; r++) {
    const k = cache.unique[r]!;
    const row = into.rowOffset + r;
    if (use === undefined || use[r] === 1) {
      let h = 0;
      for (let j = 0; j < k; j++) {
        const w = cache.counts[at + j]! / n;
        into.weights[row * C + cache.indices[at + j]!] = w;
        h += w * cache.logprobs[at + j]!;
      }
      into.entropy[row] = h;
    }
    at += k;
  }
  return at;
}

export type SampledFeeds = { readonly weights: Feed; readonly entropy: Feed };
