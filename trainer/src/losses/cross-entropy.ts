import * as tf from '@tensorflow/tfjs';

/** Cross-entropy with integer labels, batch mean. Rows labelled −1 (unlabelled) are skipped. */
export function crossEntropyLoss(student: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  const C = student.shape[1];
  return tf.tidy(() => {
    const valid = tf.greaterEqual(labels, 0).toFloat();
    const oneHot = tf.oneHot(tf.maximum(labels, 0).toInt(), C).toFloat();
    const nll = tf.neg(tf.sum(tf.mul(oneHot, tf.logSoftmax(student)), 1));
    const n = tf.maximum(tf.sum(valid), 1);
    return tf.div(tf.sum(tf.mul(nll, valid)), n) as tf.Scalar;
  });
}
