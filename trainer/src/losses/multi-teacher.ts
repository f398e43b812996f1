import * as tf from '@tensorflow/tfjs';
import { klRows } from './common.js';

export interface SubsetTeacher {
  /** [N, C_t] this teacher's logits z over its own classes (the loss divides by T). */
  readonly logits: tf.Tensor2D;
  /** Position of each of the teacher's classes in the student's (union) class list. */
  readonly classIndex: readonly number[];
}

/**
 * Teachers with *different* class lists (UHC-style; Vongkulbhisal et al., CVPR 2019,
 * "Unifying Heterogeneous Classifiers with Distillation"). The student predicts over the union;
 * for each teacher, the student's softmax renormalised over that teacher's classes is matched
 * to the teacher's softmax: T² · KL(p_t ‖ softmax(s[classes_t]/T)), averaged over teachers and
 * the batch.
 */
export function multiTeacherLoss(student: tf.Tensor2D, teachers: readonly SubsetTeacher[], params: { temperature: number }): tf.Scalar {
  if (teachers.length === 0) throw new Error('multiTeacherLoss needs at least one teacher');
  const T = params.temperature;
  const U = student.shape[1];
  return tf.tidy(() => {
    const terms = teachers.map((t, i) => {
      if (t.logits.shape[1] !== t.classIndex.length) throw new Error(`teacher ${i}: ${t.logits.shape[1]} logits for ${t.classIndex.length} classes`);
      if (t.classIndex.some((c) => c < 0 || c >= U)) throw new Error(`teacher ${i}: class index outside the student's ${U} classes`);
      // Columns picked by a 0/1 matrix product (differentiable on every backend; gather's
      // gradient needs UnsortedSegmentSum, which wasm lacks).
      const pick = tf.oneHot(tf.tensor1d([...t.classIndex], 'int32'), U).toFloat().transpose(); // [U, C_t]
      const sub = tf.matMul(student, pick) as tf.Tensor2D;
      const logQ = tf.logSoftmax(tf.div(sub, T)) as tf.Tensor2D;
      const logP = tf.logSoftmax(tf.div(t.logits, T)) as tf.Tensor2D;
      return tf.mean(klRows(logP, logQ));
    });
    return tf.mul(tf.div(tf.addN(terms), teachers.length), T * T) as tf.Scalar;
  });
}
