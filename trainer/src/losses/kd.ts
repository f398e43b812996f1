import * as tf from '@tensorflow/tfjs';
import { assertPair, klRows } from './common.js';

/**
 * Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531):
 * T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean. The T² keeps gradient magnitudes
 * comparable across temperatures.
 */
export function kdLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, params: { temperature: number }): tf.Scalar {
  assertPair(student, teacher, 'kdLoss');
  const T = params.temperature;
  return tf.tidy(() => {
    const logP = tf.logSoftmax(tf.div(teacher, T)) as tf.Tensor2D;
    const logQ = tf.logSoftmax(tf.div(student, T)) as tf.Tensor2D;
    return tf.mul(tf.mean(klRows(logP, logQ)), T * T) as tf.Scalar;
  });
}
