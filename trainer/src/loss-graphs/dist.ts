/**
 * DIST (Huang et al. 2022) as ../losses/dist.ts: 1 − Pearson correlation of the softened
 * distributions, between classes within a row (inter) and between rows within a class (intra).
 * The intra-class statistics run over the selected rows only (mask-weighted batch sums).
 */
import type { Graph } from '@distillate/shared/onnx';
import { divide, rowMean, scalar, softmax, sumLast, times, type RowMean } from './common.js';

const EPS = 1e-8;

export function distGraph(g: Graph, student: string, teacher: string, m: RowMean, p: { beta: number; gamma: number; temperature: number }): string {
  const T = p.temperature;
  const ys = softmax(g, divide(g, student, T));
  const yt = softmax(g, divide(g, teacher, T));
  const one = scalar(g, 1);
  const norm = (x: string, sum: (v: string) => string): string => g.node('Sqrt', [sum(g.node('Mul', [x, x]))]);
  const safe = (dot: string, na: string, nb: string): string => g.node('Div', [dot, g.node('Max', [g.node('Mul', [na, nb]), scalar(g, EPS)])]);
  // Within each row, across classes.
  const rowCentre = (x: string): string => g.node('Sub', [x, g.node('ReduceMean', [x], { axes: [1], keepdims: 1 })]);
  const as = rowCentre(ys);
  const at = rowCentre(yt);
  const rowSum = (v: string): string => sumLast(g, v);
  const inter = g.node('Sub', [one, rowMean(g, safe(rowSum(g.node('Mul', [as, at])), norm(as, rowSum), norm(at, rowSum)), m)]);
  // Within each class, across the selected rows.
  const colSum = (v: string): string => g.node('ReduceSum', [g.node('Mul', [v, m.rows]), g.int64('axes', [0])], { keepdims: 1 });
  const colMean = (x: string): string => g.node('Mul', [colSum(x), m.norm]);
  const bs = g.node('Sub', [ys, colMean(ys)]);
  const bt = g.node('Sub', [yt, colMean(yt)]);
  const intraR = safe(colSum(g.node('Mul', [bs, bt])), norm(bs, colSum), norm(bt, colSum));
  const intra = g.node('Sub', [one, g.node('ReduceMean', [intraR], { keepdims: 0 })]);
  return times(g, g.node('Add', [times(g, inter, p.beta), times(g, intra, p.gamma)]), T * T);
}
