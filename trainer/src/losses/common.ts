import * as tf from '@tensorflow/tfjs';

/** Masking constant for "remove this class" before a softmax (as in the reference DKD/NKD code, but far larger). */
export const MASK = 1e9;

/** One-hot [N, C] float mask of the labels. */
export function targetMask(labels: tf.Tensor1D, classes: number): tf.Tensor2D {
  return tf.oneHot(labels.toInt(), classes).toFloat() as tf.Tensor2D;
}

/** Σ_c p (log p − log q) per row, where p = exp(logP); rows with p = 0 contribute 0. */
export function klRows(logP: tf.Tensor2D, logQ: tf.Tensor2D): tf.Tensor1D {
  const p = tf.exp(logP);
  return tf.sum(tf.mul(p, tf.sub(logP, logQ)), 1) as tf.Tensor1D;
}

export function assertPair(student: tf.Tensor2D, teacher: tf.Tensor2D, what: string): void {
  if (student.rank !== 2 || teacher.rank !== 2 || student.shape[0] !== teacher.shape[0] || student.shape[1] !== teacher.shape[1]) {
    throw new Error(`${what}: student ${JSON.stringify(student.shape)} and teacher ${JSON.stringify(teacher.shape)} logits must both be [N, C]`);
  }
}
