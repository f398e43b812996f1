/** Logit-standardised KD (Sun et al. 2024) as ../losses/ls-kd.ts: KD on z-scored logits (unbiased std, + 1e-7). */
import type { Graph } from '@distillate/shared/onnx';
import { scalar, sumLast, type RowMean } from './common.js';
import { kdGraph } from './kd.js';

export function standardizeGraph(g: Graph, z: string, classes: number): string {
  const centred = g.node('Sub', [z, g.node('ReduceMean', [z], { axes: [1], keepdims: 1 })]);
  const std = g.node('Sqrt', [g.node('Div', [sumLast(g, g.node('Mul', [centred, centred])), scalar(g, Math.max(1, classes - 1))])]);
  return g.node('Div', [centred, g.node('Add', [std, scalar(g, 1e-7)])]);
}

export function lsKdGraph(g: Graph, student: string, teacher: string, classes: number, m: RowMean, p: { temperature: number }): string {
  return kdGraph(g, standardizeGraph(g, student, classes), standardizeGraph(g, teacher, classes), m, p);
}
