import * as tf from '@tensorflow/tfjs';
import { assertPair } from './common.js';

const EPS = 1e-8;

/** Pearson correlation along `axis` of two matrices: cosine of the mean-centred vectors. */
function pearson(a: tf.Tensor2D, b: tf.Tensor2D, axis: 0 | 1): tf.Tensor1D {
  const ac = tf.sub(a, tf.mean(a, axis, true));
  const bc = tf.sub(b, tf.mean(b, axis, true));
  const dot = tf.sum(tf.mul(ac, bc), axis);
  const norms = tf.mul(tf.norm(ac, 'euclidean', axis), tf.norm(bc, 'euclidean', axis));
  return tf.div(dot, tf.maximum(norms, EPS)) as tf.Tensor1D;
}

/**
 * Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher" (DIST,
 * arXiv:2205.10536): τ²·(β·(1 − mean row Pearson) + γ·(1 − mean column Pearson)) of
 * softmax(z/τ). Rows: inter-class relations per sample; columns: intra-class across the batch.
 */
export function distLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, params: { beta: number; gamma: number; temperature: number }): tf.Scalar {
  assertPair(student, teacher, 'distLoss');
  const T = params.temperature;
  return tf.tidy(() => {
    const ys = tf.softmax(tf.div(student, T)) as tf.Tensor2D;
    const yt = tf.softmax(tf.div(teacher, T)) as tf.Tensor2D;
    const inter = tf.sub(1, tf.mean(pearson(ys, yt, 1)));
    const intra = tf.sub(1, tf.mean(pearson(ys, yt, 0)));
    return tf.mul(tf.add(tf.mul(inter, params.beta), tf.mul(intra, params.gamma)), T * T) as tf.Scalar;
  });
}
