import * as tf from '@tensorflow/tfjs';
import { MASK, assertPair, klRows, targetMask } from './common.js';

/**
 * Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation" (arXiv:2203.08679), eq. 7:
 * α·TCKD + β·NCKD, both × T², batch mean.
 * TCKD = KL over the binary split (target, all non-targets) of softmax(z/T);
 * NCKD = KL over the non-target classes, renormalised (softmax with the target removed).
 */
export function dkdLoss(
  student: tf.Tensor2D,
  teacher: tf.Tensor2D,
  labels: tf.Tensor1D,
  params: { alpha: number; beta: number; temperature: number },
): tf.Scalar {
  assertPair(student, teacher, 'dkdLoss');
  const T = params.temperature;
  const C = student.shape[1];
  return tf.tidy(() => {
    const gt = targetMask(labels, C);
    const s = tf.div(student, T) as tf.Tensor2D;
    const t = tf.div(teacher, T) as tf.Tensor2D;
    const logPs = tf.logSoftmax(s) as tf.Tensor2D;
    const logPt = tf.logSoftmax(t) as tf.Tensor2D;
    // log of the binary (target, other) masses, computed in log space to stay finite.
    const binary = (logP: tf.Tensor2D) => {
      const target = tf.sum(tf.mul(logP, gt), 1, true);
      const other = tf.logSumExp(tf.sub(logP, tf.mul(gt, MASK)), 1, true);
      return tf.concat([target, other], 1) as tf.Tensor2D;
    };
    const tckd = tf.mean(klRows(binary(logPt), binary(logPs)));
    const masked = (z: tf.Tensor2D) => tf.logSoftmax(tf.sub(z, tf.mul(gt, MASK))) as tf.Tensor2D;
    const nckd = tf.mean(klRows(masked(t), masked(s)));
    return tf.mul(tf.add(tf.mul(tckd, params.alpha), tf.mul(nckd, params.beta)), T * T) as tf.Scalar;
  });
}
