/** Normalized KD (Yang et al. 2023) as ../losses/nkd.ts. */
import type { Graph } from '@distillate/shared/onnx';
import { divide, dropClasses, logSoftmax, rowMean, softmax, sumLast, times, type RowMean } from './common.js';

export function nkdGraph(g: Graph, student: string, teacher: string, gt: string, m: RowMean, p: { temperature: number; gamma: number }): string {
  const T = p.temperature;
  const logSy = sumLast(g, g.node('Mul', [logSoftmax(g, student), gt]));
  const ty = sumLast(g, g.node('Mul', [softmax(g, teacher), gt]));
  const targetTerm = g.node('Neg', [rowMean(g, g.node('Mul', [ty, logSy]), m)]);
  const logQs = logSoftmax(g, dropClasses(g, divide(g, student, T), gt));
  const qt = softmax(g, dropClasses(g, divide(g, teacher, T), gt));
  const nonTarget = rowMean(g, sumLast(g, g.node('Mul', [qt, logQs])), m);
  return g.node('Sub', [targetTerm, times(g, nonTarget, p.gamma * T * T)]);
}
