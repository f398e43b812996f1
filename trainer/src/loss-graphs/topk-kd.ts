/**
 * KD from a top-k cache, as ../losses/topk-kd.ts. The teacher side is prepared on the host in
 * float64 (it takes no gradient): `p` [N, C] holds the exact kept probabilities at their classes
 * (0 elsewhere), `kept` [N, C] marks them, `tail` [N, 1] is the dropped mass 1 − Σ kept, and
 * `entropy` [N, 1] is Σ p·log p + tail·log tail. Per row:
 *   Σ p·(log p − log q) + tail·(log tail − log q_tail) = entropy − Σ p·log q − tail·log q_tail,
 * with log q_tail the student's log-mass outside the kept classes.
 */
import type { Graph } from '@distillate/shared/onnx';
import { divide, dropClasses, logSoftmax, rowMean, sumLast, times, type RowMean } from './common.js';

export interface TopKGraphTeacher {
  readonly p: string;
  readonly kept: string;
  readonly tail: string;
  readonly entropy: string;
}

export function topKKdGraph(g: Graph, student: string, t: TopKGraphTeacher, m: RowMean, p: { temperature: number }): string {
  const T = p.temperature;
  const logQ = logSoftmax(g, divide(g, student, T));
  const keptTerm = sumLast(g, g.node('Mul', [t.p, logQ]));
  const logQtail = g.node('ReduceLogSumExp', [dropClasses(g, logQ, t.kept)], { axes: [1], keepdims: 1 });
  const rows = g.node('Sub', [g.node('Sub', [t.entropy, keptTerm]), g.node('Mul', [t.tail, logQtail])]);
  return times(g, rowMean(g, rows, m), T * T);
}
