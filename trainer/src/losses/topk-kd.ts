import type { Feed, Ops, Rows } from './ops.js';
import { divideBy, dropClasses, rowMean, times } from './ops.js';

/** A top-k cache's teacher side for `topKKd`, prepared on the host (it takes no gradient). */
export interface TopKTargets<T> {
  /** [N, C]: the exact kept probabilities exp(logit − logsumexp) at their classes, 0 elsewhere. */
  readonly p: T;
  /** [N, C]: 1 at the kept classes. */
  readonly kept: T;
  /** [N, 1]: the dropped mass 1 − Σ kept (0 when k = C: what remains is rounding). */
  readonly tail: T;
  /** [N, 1]: Σ p·log p + tail·log tail. */
  readonly entropy: T;
}

/**
 * KD against a top-k cache: T² · KL over the k kept classes plus one "tail" bucket holding the
 * rest. With the stored logsumexp, the kept probabilities and the tail mass are exact, so this
 * is the exact KL between the two distributions coarsened to those k + 1 buckets (full KD when
 * k = C). Per row: entropy − Σ p·log q − tail·log q_tail, with log q_tail the student's log-mass
 * outside the kept classes.
 */
export function topKKd<T>(o: Ops<T>, student: T, t: TopKTargets<T>, rows: Rows<T>, temperature: number): T {
  const logQ = o.logSoftmax(divideBy(o, student, temperature));
  const keptTerm = o.sum(o.mul(t.p, logQ), -1);
  const logQtail = o.logSumExp(dropClasses(o, logQ, t.kept), -1);
  const perRow = o.sub(o.sub(t.entropy, keptTerm), o.mul(t.tail, logQtail));
  return times(o, rowMean(o, perRow, rows), temperature * temperature);
}

/**
 * The host side of `topKKd` from cached columns: `indices`/`logits` [N, k] (logits already /T),
 * `logsumexp` [N], over C classes, in float64; rows where `use` is 0 stay zero.
 */
export function topKTargets(
  cache: { readonly indices: ArrayLike<number>; readonly logits: ArrayLike<number>; readonly logsumexp: ArrayLike<number> },
  rows: number,
  k: number,
  C: number,
  use?: ArrayLike<number>,
): TopKTargets<Feed> {
  const p = new Float32Array(rows * C);
  const kept = new Float32Array(rows * C);
  const tail = new Float32Array(rows);
  const entropy = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    if (use !== undefined && use[r] !== 1) continue;
    let mass = 0;
    let h = 0;
    for (let j = 0; j < k; j++) {
      const logP = cache.logits[r * k + j]! - cache.logsumexp[r]!;
      const c = cache.indices[r * k + j]!;
      p[r * C + c] = Math.exp(logP);
      kept[r * C + c] = 1;
      mass += Math.exp(logP);
      h += Math.exp(logP) * logP;
    }
    // k = C: nothing is dropped; what 1 − Σ p leaves is rounding over a zero student mass.
    const rest = k >= C ? 0 : Math.max(0, 1 - mass);
    tail[r] = rest;
    entropy[r] = h + (rest > 0 ? rest * Math.log(rest) : 0);
  }
  return {
    p: { data: p, dims: [rows, C] },
    kept: { data: kept, dims: [rows, C] },
    tail: { data: tail, dims: [rows, 1] },
    entropy: { data: entropy, dims: [rows, 1] },
  };
}
