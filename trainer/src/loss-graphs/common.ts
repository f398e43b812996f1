/**
 * Helpers for losses written as ONNX graph pieces: the same formulas as the TF.js functions in
 * ../losses/, op for op, so the ORT engine differentiates the loss inside its train-step graph.
 * Each piece is pinned to its TF.js function (value and dL/dlogits) by loss-graphs.test.ts.
 *
 * Batch means run over the rows that take part (a 0/1 column `rows` [N, 1]) times `norm`
 * (1 / their count), the graph form of the TF.js path's row gather.
 */
import type { Graph } from '@distillate/shared/onnx';

/** The same large constant as ../losses/common.ts: subtracted from a logit to drop its class. */
export const MASK = 1e9;

export interface RowMean {
  /** [N, 1]: 1 for the rows in the mean, else 0. */
  readonly rows: string;
  /** [1]: 1 / (number of those rows, at least 1). */
  readonly norm: string;
}

export const scalar = (g: Graph, v: number): string => g.constant('c', [v], []);

/** Σ over the last axis, keeping it: [N, C] → [N, 1]. */
export const sumLast = (g: Graph, x: string): string => g.node('ReduceSum', [x, g.int64('axes', [1])], { keepdims: 1 });

/** Mean of a per-row column [N, 1] over the rows in `m`: a scalar. */
export function rowMean(g: Graph, perRow: string, m: RowMean): string {
  return g.node('Mul', [g.node('ReduceSum', [g.node('Mul', [perRow, m.rows])], { keepdims: 0 }), g.node('ReduceSum', [m.norm], { keepdims: 0 })]);
}

/** KL(P‖Q) per row from log-probabilities, [N, 1]: Σ p·(log p − log q). */
export function klRows(g: Graph, logP: string, logQ: string): string {
  return sumLast(g, g.node('Mul', [g.node('Exp', [logP]), g.node('Sub', [logP, logQ])]));
}

export const logSoftmax = (g: Graph, x: string): string => g.node('LogSoftmax', [x], { axis: -1 });
export const softmax = (g: Graph, x: string): string => g.node('Softmax', [x], { axis: -1 });
export const divide = (g: Graph, x: string, by: number): string => (by === 1 ? x : g.node('Div', [x, scalar(g, by)]));
export const times = (g: Graph, x: string, by: number): string => (by === 1 ? x : g.node('Mul', [x, scalar(g, by)]));
/** z − MASK·mask: the masked classes drop out of a softmax. */
export const dropClasses = (g: Graph, z: string, mask: string): string => g.node('Sub', [z, g.node('Mul', [mask, scalar(g, MASK)])]);
