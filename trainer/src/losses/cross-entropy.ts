import type { Ops, Rows } from './ops.js';
import { rowMean } from './ops.js';

/** Cross-entropy, −Σ onehot·log softmax(z), mean over `rows` (the labelled rows). `target` [N, C]: one-hot labels, a zero row where none. */
export function crossEntropy<T>(o: Ops<T>, student: T, target: T, rows: Rows<T>): T {
  return rowMean(o, o.neg(o.sum(o.mul(target, o.logSoftmax(student)), -1)), rows);
}
