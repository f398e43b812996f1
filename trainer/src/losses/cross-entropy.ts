import type { Ops, Rows } from './ops.js';
import { rowMean } from './ops.js';

/** Cross-entropy, −Σ onehot·log softmax(z), mean over `rows` (the labelled rows). `target` [N, C]: one-hot labels, a zero row where none. */
export function crossEntropy<T>(o: Ops<T>, student: T, target: T, rows: Rows<T>): T {
  return rowMean(o, o.neg(o.sum(o.mul(target, o.logSoftmax(student)), -1)), rows);
}

/**
 * The same cross-entropy from class indices instead of one-hot rows: −log softmax(z) read at
 * each row's index (`indices` [..., 1], floats). Equal to crossEntropy with the one-hot of
 * `indices`; for a language model's [N, L, V] logits it reads N·L entries where the one-hot form
 * builds and multiplies an [N, L, V] target (measured: 10 % of a train step).
 */
export function crossEntropyAt<T>(o: Ops<T>, student: T, indices: T, rows: Rows<T>): T {
  return rowMean(o, o.neg(o.gatherLast(o.logSoftmax(student), indices)), rows);
}
