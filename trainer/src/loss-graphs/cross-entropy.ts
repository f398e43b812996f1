/** Cross-entropy on the labelled rows, as ../losses/cross-entropy.ts: −Σ onehot·log softmax(z), mean over labelled rows. */
import type { Graph } from '@distillate/shared/onnx';
import { logSoftmax, rowMean, sumLast, type RowMean } from './common.js';

/** `target` [N, C]: one-hot labels, a zero row where a row has none; `m` selects the labelled rows. */
export function crossEntropyGraph(g: Graph, student: string, target: string, m: RowMean): string {
  const nll = g.node('Neg', [sumLast(g, g.node('Mul', [target, logSoftmax(g, student)]))]);
  return rowMean(g, nll, m);
}
