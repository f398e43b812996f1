import * as tf from '@tensorflow/tfjs';
import { MASK, assertPair, targetMask } from './common.js';

/**
 * Yang et al., ICCV 2023, "From Knowledge Distillation to Self-Knowledge Distillation: A
 * Unified Approach with Normalized Loss and Customized Soft Labels" (arXiv:2303.13005):
 * −mean(t_y · log s_y) at T = 1, minus γ·T²·mean Σ_{c≠y} softmax(t∖y/T)_c · log softmax(s∖y/T)_c.
 */
export function nkdLoss(
  student: tf.Tensor2D,
  teacher: tf.Tensor2D,
  labels: tf.Tensor1D,
  params: { temperature: number; gamma: number },
): tf.Scalar {
  assertPair(student, teacher, 'nkdLoss');
  const T = params.temperature;
  const C = student.shape[1];
  return tf.tidy(() => {
    const gt = targetMask(labels, C);
    const logSy = tf.sum(tf.mul(tf.logSoftmax(student), gt), 1);
    const ty = tf.sum(tf.mul(tf.softmax(teacher), gt), 1);
    const targetTerm = tf.neg(tf.mean(tf.mul(ty, logSy)));
    const logQs = tf.logSoftmax(tf.sub(tf.div(student, T), tf.mul(gt, MASK)));
    const qt = tf.softmax(tf.sub(tf.div(teacher, T), tf.mul(gt, MASK)));
    // The target column of qt is exactly 0, so it drops out of the sum.
    const nonTarget = tf.mean(tf.sum(tf.mul(qt, logQs), 1));
    return tf.sub(targetTerm, tf.mul(nonTarget, params.gamma * T * T)) as tf.Scalar;
  });
}
