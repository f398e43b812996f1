import * as tf from '@tensorflow/tfjs';
import { MASK } from './common.js';

export interface TopKTeacher {
  /** [N, k] class indices (int32). */
  readonly indices: tf.Tensor2D;
  /** [N, k] teacher logits / T for those classes. */
  readonly logits: tf.Tensor2D;
  /** [N] log Σ_c exp(z_c / T) over all classes, as stored in the cache. */
  readonly logsumexp: tf.Tensor1D;
}

/**
 * KD against a top-k cache: T² · KL over the k kept classes plus one "tail" bucket holding the
 * rest. With the stored logsumexp, the kept teacher probabilities exp(logit − lse) and the tail
 * mass 1 − Σ kept are exact, so this is the exact KL between the two distributions coarsened to
 * those k + 1 buckets (it equals full KD when k = C). Batch mean.
 */
export function topKKdLoss(student: tf.Tensor2D, teacher: TopKTeacher, params: { temperature: number }): tf.Scalar {
  const T = params.temperature;
  const [N, C] = student.shape;
  const k = teacher.indices.shape[1];
  if (teacher.indices.shape[0] !== N || teacher.logits.shape[0] !== N || teacher.logsumexp.shape[0] !== N) {
    throw new Error(`topKKdLoss: ${N} student rows but teacher rows ${teacher.indices.shape[0]}/${teacher.logits.shape[0]}/${teacher.logsumexp.shape[0]}`);
  }
  return tf.tidy(() => {
    const logQ = tf.logSoftmax(tf.div(student, T)) as tf.Tensor2D;
    const kept = tf.sum(tf.oneHot(teacher.indices.toInt(), C), 1).toFloat() as tf.Tensor2D; // [N, C] 0/1
    // Student log-probs at the teacher's kept classes, as a one-hot contraction rather than a
    // gather: gather's gradient needs UnsortedSegmentSum, which the wasm backend lacks.
    const select = tf.oneHot(teacher.indices.toInt(), C).toFloat(); // [N, k, C]
    const logQk = tf.sum(tf.mul(select, logQ.expandDims(1)), 2) as tf.Tensor2D;
    const logPk = tf.sub(teacher.logits, teacher.logsumexp.expandDims(1));
    const pk = tf.exp(logPk);
    const keptTerm = tf.sum(tf.mul(pk, tf.sub(logPk, logQk)), 1);
    // k = C: nothing is dropped; the tail is float32 rounding noise over a zero student mass.
    if (k >= C) return tf.mul(tf.mean(keptTerm), T * T) as tf.Scalar;
    const tail = tf.relu(tf.sub(1, tf.sum(pk, 1))); // clamp tiny negative rounding
    const logQtail = tf.logSumExp(tf.sub(logQ, tf.mul(kept, MASK)), 1);
    const safeTail = tf.maximum(tail, 1e-30);
    const tailTerm = tf.where(tf.greater(tail, 0), tf.mul(tail, tf.sub(tf.log(safeTail), logQtail)), tf.zerosLike(tail));
    return tf.mul(tf.mean(tf.add(keptTerm, tailTerm)), T * T) as tf.Scalar;
  });
}
