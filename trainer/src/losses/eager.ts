/**
 * The losses as plain functions of TF.js tensors, every row taking part: the same definitions
 * the engines run, evaluated eagerly (for tests, notebooks and users of the TF.js API).
 */
import * as tf from '@tensorflow/tfjs';
import { crossEntropy } from './cross-entropy.js';
import { distillLoss, type Distill, type DistillInput } from './distill.js';
import { DistillSchema } from './distill.js';
import type { Rows } from './ops.js';
import { tfjsOps } from './ops-tfjs.js';
import { subsetKd } from './subset-kd.js';
import { topKKd, topKTargets } from './topk-kd.js';

const allRows = (n: number): Rows<tf.Tensor> => ({ mask: tf.ones([n, 1]), norm: tf.scalar(1 / Math.max(1, n)) });
const oneHot = (labels: tf.Tensor1D, C: number): tf.Tensor =>
  tf.oneHot(tf.maximum(labels, 0).toInt(), C).toFloat().mul(tf.greaterEqual(labels, 0).toFloat().expandDims(1));

function checkPair(student: tf.Tensor, teacher: tf.Tensor, what: string): void {
  if (student.rank !== 2 || teacher.rank !== 2 || student.shape[0] !== teacher.shape[0] || student.shape[1] !== teacher.shape[1]) {
    throw new Error(`${what}: student ${JSON.stringify(student.shape)} and teacher ${JSON.stringify(teacher.shape)} logits must both be [N, C]`);
  }
}

/** A distillation method's loss over every row: `distill` as in a recipe (params may be partial). */
export function distillLossEager(distill: DistillInput, student: tf.Tensor2D, teacher: tf.Tensor2D, labels?: tf.Tensor1D): tf.Scalar {
  const d: Distill = DistillSchema.parse(distill);
  if (d.method === 'scratch') throw new Error('distillLossEager: scratch has no distillation term');
  checkPair(student, teacher, `${d.method} loss`);
  const [N, C] = student.shape;
  return tf.tidy(() => {
    const target = labels === undefined ? tf.zeros([N, C]) : oneHot(labels, C);
    return distillLoss(d)(tfjsOps, { student, teacher, target, classes: C, rows: allRows(N) }) as tf.Scalar;
  });
}

type P = Readonly<Record<string, number>>;
export const kdLoss = (s: tf.Tensor2D, t: tf.Tensor2D, params: P): tf.Scalar => distillLossEager({ method: 'kd', params }, s, t);
export const dkdLoss = (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, params: P): tf.Scalar => distillLossEager({ method: 'dkd', params }, s, t, y);
export const nkdLoss = (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, params: P): tf.Scalar => distillLossEager({ method: 'nkd', params }, s, t, y);
export const distLoss = (s: tf.Tensor2D, t: tf.Tensor2D, params: P): tf.Scalar => distillLossEager({ method: 'dist', params }, s, t);
export const lsKdLoss = (s: tf.Tensor2D, t: tf.Tensor2D, params: P): tf.Scalar => distillLossEager({ method: 'lskd', params }, s, t);

/** Cross-entropy with integer labels, mean over the labelled rows (−1: unlabelled, skipped). */
export function crossEntropyLoss(student: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const valid = tf.greaterEqual(labels, 0).toFloat().expandDims(1);
    const rows = { mask: valid, norm: tf.div(1, tf.maximum(tf.sum(valid), 1)) };
    return crossEntropy(tfjsOps, student, oneHot(labels, student.shape[1]), rows) as tf.Scalar;
  });
}

/** A top-k cache's columns: `indices`/`logits` [N, k] (logits / T), `logsumexp` [N]. */
export interface TopKTeacher {
  readonly indices: ArrayLike<number>;
  readonly logits: ArrayLike<number>;
  readonly logsumexp: ArrayLike<number>;
  readonly k: number;
}

export function topKKdLoss(student: tf.Tensor2D, teacher: TopKTeacher, params: { readonly temperature: number }): tf.Scalar {
  const [N, C] = student.shape;
  const t = topKTargets(teacher, N, teacher.k, C);
  return tf.tidy(() => {
    const f = (x: { data: Float32Array; dims: readonly number[] }): tf.Tensor => tf.tensor(x.data, [...x.dims]);
    return topKKd(tfjsOps, student, { p: f(t.p), kept: f(t.kept), tail: f(t.tail), entropy: f(t.entropy) }, allRows(N), params.temperature) as tf.Scalar;
  });
}

export function multiTeacherLoss(
  student: tf.Tensor2D,
  teachers: ReadonlyArray<{ readonly logits: tf.Tensor2D; readonly classIndex: readonly number[] }>,
  params: { readonly temperature: number },
): tf.Scalar {
  teachers.forEach((t, i) => {
    if (t.logits.shape[1] !== t.classIndex.length) throw new Error(`teacher ${i}: ${t.logits.shape[1]} logits for ${t.classIndex.length} classes`);
  });
  return tf.tidy(() => subsetKd(tfjsOps, student, student.shape[1], teachers, allRows(student.shape[0]), params.temperature) as tf.Scalar);
}
