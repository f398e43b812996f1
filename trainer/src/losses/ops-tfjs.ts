/**
 * The losses' ops on TF.js tensors, evaluated eagerly (the TF.js engine differentiates through
 * them with tf.variableGrads). Call inside a tf.tidy or grad scope: intermediates are released
 * with it.
 */
import * as tf from '@tensorflow/tfjs';
import type { Ops } from './ops.js';

const axisOf = (x: tf.Tensor, axis: number): number => (axis < 0 ? axis + x.rank : axis);

export const tfjsOps: Ops<tf.Tensor> = {
  scalar: (v) => tf.scalar(v),
  matrix: (values, dims) => tf.tensor2d(values, [dims[0], dims[1]]),
  add: (a, b) => tf.add(a, b),
  sub: (a, b) => tf.sub(a, b),
  mul: (a, b) => tf.mul(a, b),
  div: (a, b) => tf.div(a, b),
  maximum: (a, b) => tf.maximum(a, b),
  neg: (x) => tf.neg(x),
  exp: (x) => tf.exp(x),
  log: (x) => tf.log(x),
  sqrt: (x) => tf.sqrt(x),
  abs: (x) => tf.abs(x),
  logSoftmax: (x) => tf.logSoftmax(x),
  softmax: (x) => tf.softmax(x),
  sum: (x, axis) => tf.sum(x, axisOf(x, axis), true),
  mean: (x, axis) => tf.mean(x, axisOf(x, axis), true),
  logSumExp: (x, axis) => tf.logSumExp(x, axisOf(x, axis), true),
  sumAll: (x) => tf.sum(x),
  meanAll: (x) => tf.mean(x),
  concat: (xs, axis) => tf.concat([...xs], axis < 0 ? axis + xs[0]!.rank : axis),
  flatten: (x) => tf.reshape(x, [x.shape[0]!, -1]),
  // A one-hot product summed over the classes: exact, and differentiable by TF.js in every backend.
  gatherLast: (x, indices) => tf.tidy(() => tf.sum(tf.mul(tf.expandDims(x, -2), tf.oneHot(tf.cast(indices, 'int32'), x.shape.at(-1)!).toFloat()), -1)),
  oneHot: (indices, depth) => tf.tidy(() => tf.oneHot(tf.cast(indices, 'int32'), depth).toFloat()),
  matMul: (a, b) => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
};
