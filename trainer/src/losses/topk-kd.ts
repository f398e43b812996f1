import type { Feed, Ops, Rows } from './ops.js';
import { MASK, divideBy, dropClasses, rowMean, times } from './ops.js';

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
  /**
   * [N, C + 1] (only when asked for): the teacher's log-probabilities of the k + 1 buckets, the
   * kept classes at their columns, −MASK at the others, the tail's last (a tail that rounds to 0
   * counts as 1e-12).
   */
  readonly logBuckets?: T;
}

/** The smallest tail mass a bucket's log takes. */
const TAIL_FLOOR = 1e-12;

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
 * The student's and the teacher's distributions over the top-k cache's k + 1 buckets (the kept
 * classes and the tail), as [N, C + 1] logits at temperature T: a registered method (rkl, jsd,
 * tvd; kd gives `topKKd`) applied to them divides by T, takes their log-softmax (which gives the
 * bucket log-probabilities back) and computes its divergence between the two coarsened
 * distributions, exactly: the stored logsumexp makes the teacher's tail mass exact. The classes
 * outside a row's top k sit at −MASK in both, so they add nothing.
 */
export function topKBuckets<T>(o: Ops<T>, student: T, t: TopKTargets<T>, temperature: number): { student: T; teacher: T } {
  if (t.logBuckets === undefined) throw new Error('topKBuckets needs the targets made with buckets: true');
  const logQ = o.logSoftmax(divideBy(o, student, temperature));
  const kept = dropClasses(o, logQ, o.sub(o.scalar(1), t.kept));
  const tail = o.logSumExp(dropClasses(o, logQ, t.kept), -1);
  return { student: times(o, o.concat([kept, tail], -1), temperature), teacher: times(o, t.logBuckets, temperature) };
}

/**
 * The host side of `topKKd` (and, with `buckets`, of `topKBuckets`) from cached columns:
 * `indices`/`logits` [N, k] (logits already /T), `logsumexp` [N], over C classes, in float64;
 * rows where `use` is 0 stay zero.
 */
export function topKTargets(
  cache: { readonly indices: ArrayLike<number>; readonly logits: ArrayLike<number>; readonly logsumexp: ArrayLike<number> },
  rows: number,
  k: number,
  C: number,
  use?: ArrayLike<number>,
  buckets = false,
): TopKTargets<Feed> {
  const p = new Float32Array(rows * C);
  const kept = new Float32Array(rows * C);
  const tail = new Float32Array(rows);
  const entropy = new Float32Array(rows);
  const logB = buckets ? new Float32Array(rows * (C + 1)).fill(-MASK) : undefined;
  for (let r = 0; r < rows; r++) {
    if (use !== undefined && use[r] !== 1) continue;
    let mass = 0;
    let h = 0;
    for (let j = 0; j < k; j++) {
      const logP = cache.logits[r * k + j]! - cache.logsumexp[r]!;
      const c = cache.indices[r * k + j]!;
      p[r * C + c] = Math.exp(logP);
      kept[r * C + c] = 1;
      if (logB !== undefined) logB[r * (C + 1) + c] = logP;
      mass += Math.exp(logP);
      h += Math.exp(logP) * logP;
    }
    // k = C: nothing is dropped; what 1 − Σ p leaves is rounding over a zero student mass.
    const rest = k >= C ? 0 : Math.max(0, 1 - mass);
    tail[r] = rest;
    entropy[r] = h + (rest > 0 ? rest * Math.log(rest) : 0);
    if (logB !== undefined && k < C) logB[r * (C + 1) + C] = Math.log(Math.max(rest, TAIL_FLOOR));
  }
  return {
    p: { data: p, dims: [rows, C] },
    kept: { data: kept, dims: [rows, C] },
    tail: { data: tail, dims: [rows, 1] },
    entropy: { data: entropy, dims: [rows, 1] },
    ...(logB === undefined ? {} : { logBuckets: { data: logB, dims: [rows, C + 1] } }),
  };
}
