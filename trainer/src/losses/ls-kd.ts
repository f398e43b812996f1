import * as tf from '@tensorflow/tfjs';
import { assertPair } from './common.js';
import { kdLoss } from './kd.js';

/** (z − mean) / (std + 1e-7) per row, with the unbiased (N − 1) standard deviation. */
export function standardizeLogits(z: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const C = z.shape[1];
    const mean = tf.mean(z, 1, true);
    const centred = tf.sub(z, mean);
    const std = tf.sqrt(tf.div(tf.sum(tf.square(centred), 1, true), Math.max(1, C - 1)));
    return tf.div(centred, tf.add(std, 1e-7)) as tf.Tensor2D;
  });
}

/**
 * Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation" (arXiv:2403.01427):
 * kdLoss on z-scored logits, so the student matches the teacher's logit *relations* rather
 * than their scale.
 */
export function lsKdLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, params: { temperature: number }): tf.Scalar {
  assertPair(student, teacher, 'lsKdLoss');
  return tf.tidy(() => kdLoss(standardizeLogits(student), standardizeLogits(teacher), params));
}
