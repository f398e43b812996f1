/** Decoupled KD (Zhao et al. 2022) as ../losses/dkd.ts: α·TCKD + β·NCKD, times T². */
import type { Graph } from '@distillate/shared/onnx';
import { divide, dropClasses, klRows, logSoftmax, MASK, rowMean, scalar, sumLast, times, type RowMean } from './common.js';

export function dkdGraph(g: Graph, student: string, teacher: string, gt: string, m: RowMean, p: { alpha: number; beta: number; temperature: number }): string {
  const T = p.temperature;
  const s = divide(g, student, T);
  const t = divide(g, teacher, T);
  // log of the binary (target, other) masses, in log space to stay finite.
  const binary = (logP: string): string => {
    const target = sumLast(g, g.node('Mul', [logP, gt]));
    const other = g.node('ReduceLogSumExp', [g.node('Sub', [logP, g.node('Mul', [gt, scalar(g, MASK)])])], { axes: [1], keepdims: 1 });
    return g.node('Concat', [target, other], { axis: 1 });
  };
  const tckd = rowMean(g, klRows(g, binary(logSoftmax(g, t)), binary(logSoftmax(g, s))), m);
  const masked = (z: string): string => logSoftmax(g, dropClasses(g, z, gt));
  const nckd = rowMean(g, klRows(g, masked(t), masked(s)), m);
  return times(g, g.node('Add', [times(g, tckd, p.alpha), times(g, nckd, p.beta)]), T * T);
}
