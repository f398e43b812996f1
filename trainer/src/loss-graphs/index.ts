/**
 * Losses as ONNX graph pieces, one file per method, registered in one table like ../losses/.
 * The ORT engine puts the batch's loss inside its train-step graph, so the step is one
 * session run: forward, loss, reverse-mode gradients and the optimizer update.
 */
import type { Graph } from '@distillate/shared/onnx';
import type { RowMean } from './common.js';
import { distGraph } from './dist.js';
import { dkdGraph } from './dkd.js';
import { kdGraph } from './kd.js';
import { lsKdGraph } from './ls-kd.js';
import { nkdGraph } from './nkd.js';

export { crossEntropyGraph } from './cross-entropy.js';
export { kdGraph } from './kd.js';
export { topKKdGraph, type TopKGraphTeacher } from './topk-kd.js';
export { multiTeacherGraph } from './multi-teacher.js';
export { standardizeGraph } from './ls-kd.js';
export type { RowMean } from './common.js';

/** Dense-teacher methods: student logits, teacher logits, one-hot labels (a zero row: none), rows, params. */
export type DenseLossGraph = (g: Graph, student: string, teacher: string, gt: string, classes: number, m: RowMean, params: Record<string, number>) => string;

export const denseLossGraphs = {
  kd: (g, s, t, _gt, _c, m, p) => kdGraph(g, s, t, m, p as { temperature: number }),
  dkd: (g, s, t, gt, _c, m, p) => dkdGraph(g, s, t, gt, m, p as { alpha: number; beta: number; temperature: number }),
  nkd: (g, s, t, gt, _c, m, p) => nkdGraph(g, s, t, gt, m, p as { temperature: number; gamma: number }),
  dist: (g, s, t, _gt, _c, m, p) => distGraph(g, s, t, m, p as { beta: number; gamma: number; temperature: number }),
  lskd: (g, s, t, _gt, c, m, p) => lsKdGraph(g, s, t, c, m, p as { temperature: number }),
} satisfies Record<string, DenseLossGraph>;

/** A feed of the train-step graph: values and dims (the batch first). */
export interface Feed {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

/**
 * One batch's loss for the ORT engine. Batches with the same `key` share a graph (and a
 * session); `build` appends the loss to a graph holding the student's logits and declares its
 * inputs, `feeds` gives this batch's values for them.
 */
export interface LossGraph {
  readonly key: string;
  build(g: Graph, logits: string, classes: number): { readonly total: string; readonly terms: Readonly<Record<string, string>> };
  feeds(): Record<string, Feed>;
}
