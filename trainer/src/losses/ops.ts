/**
 * The tensor operations every loss is written against, and the contract between a batch's loss
 * and an engine. A loss is a function of an `Ops<T>` and some tensors of type T: the TF.js
 * backend (ops-tfjs.ts) evaluates it eagerly on tf.Tensors and lets TF.js differentiate it; the
 * ONNX backend (ops-onnx.ts) appends it to a graph, symbolically, where the ORT engine
 * differentiates it by its gradient rules. A loss never knows which one runs it.
 *
 * The surface is small on purpose: what the KD literature's losses need (softmax and friends
 * over the last axis, reductions, elementwise arithmetic, a constant matrix product for picking
 * columns) and nothing that one backend could not give exactly as the other does.
 */

/** Elementwise and reducing tensor operations. Reductions keep the reduced axis (size 1). */
export interface Ops<T> {
  /** A scalar constant (broadcasts against anything). */
  scalar(value: number): T;
  /** A constant matrix [rows, cols], row-major. */
  matrix(values: Float32Array, dims: readonly [number, number]): T;
  add(a: T, b: T): T;
  sub(a: T, b: T): T;
  mul(a: T, b: T): T;
  div(a: T, b: T): T;
  /** Elementwise maximum. */
  maximum(a: T, b: T): T;
  neg(x: T): T;
  exp(x: T): T;
  log(x: T): T;
  sqrt(x: T): T;
  abs(x: T): T;
  /** log softmax and softmax over the last axis. */
  logSoftmax(x: T): T;
  softmax(x: T): T;
  /** Σ, mean and log Σ exp over one axis (negative counts from the end), keeping it. */
  sum(x: T, axis: number): T;
  mean(x: T, axis: number): T;
  logSumExp(x: T, axis: number): T;
  /** Σ over every element: a scalar. */
  sumAll(x: T): T;
  /** Mean over every element: a scalar. Not over the batch axis (the graph backend has no gradient for that): use rowMean. */
  meanAll(x: T): T;
  concat(xs: readonly T[], axis: number): T;
  /** [N, K] × [K, M] matrix product. */
  matMul(a: T, b: T): T;
  /**
   * One-hot rows from class indices held as floats (exact below 2²⁴), each in [0, depth): [...] →
   * [..., depth], 1 at each index. No gradient flows through it (it makes targets from inputs).
   */
  oneHot(indices: T, depth: number): T;
  /**
   * Entries of x picked along its last axis: x [..., C] and float indices [..., S] (each in
   * [0, C)) give [..., S], x[..., indices[..., j]]; the gradient adds back where indices repeat.
   */
  gatherLast(x: T, indices: T): T;
  /** [N, d1, d2, …] → [N, d1·d2·…]: each row flattened (features of any rank as vectors). */
  flatten(x: T): T;
}

/**
 * Which rows of the batch a mean runs over: a 0/1 column and one over its count. Rows without
 * a label (for CE) or without a teacher (for KD) are 0; masks keep one graph per batch shape.
 */
export interface Rows<T> {
  /** [N, 1]: 1 for the rows in the mean, else 0. */
  readonly mask: T;
  /** [1]: 1 / (number of those rows, at least 1). */
  readonly norm: T;
}

/** Host data for a loss input: values and dims. */
export interface Feed {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

/** A dim of a loss input: a number, or 'N' for the batch. */
export type Dim = number | 'N';

/** The terms of a loss: the total to minimise and every named part, all scalars. */
export interface LossTerms<T> {
  readonly total: T;
  readonly terms: Readonly<Record<string, T>>;
}

/**
 * One batch's loss, as engines see it. `inputs` declares the tensors it needs besides the
 * student's outputs (dims with 'N' for the batch); `feeds` gives this batch's values for them;
 * `compute` writes the loss against any backend, reading the student's outputs by name
 * (`logits` today; intermediate tensors for feature hints). Batches with the same `key` have
 * the same inputs and the same computation, so an engine may build once per key.
 */
export interface BatchLoss {
  readonly key: string;
  readonly inputs: Readonly<Record<string, readonly Dim[]>>;
  /** The student outputs it reads. */
  readonly outputs: readonly string[];
  feeds(): Record<string, Feed>;
  compute<T>(o: Ops<T>, outputs: Readonly<Record<string, T>>, inputs: Readonly<Record<string, T>>): LossTerms<T>;
}

/** Large enough that exp(z − MASK) is 0 in float32 for any logit: subtracting it drops a class from a softmax. */
export const MASK = 1e9;

/** Mean of a per-row column [N, 1] over the rows in `rows`: a scalar. */
export function rowMean<T>(o: Ops<T>, perRow: T, rows: Rows<T>): T {
  return o.mul(o.sumAll(o.mul(perRow, rows.mask)), o.sumAll(rows.norm));
}

/** KL(P‖Q) per row from log-probabilities, [N, 1]: Σ p·(log p − log q); a p of 0 adds 0. */
export function klRows<T>(o: Ops<T>, logP: T, logQ: T): T {
  return o.sum(o.mul(o.exp(logP), o.sub(logP, logQ)), -1);
}

/** z − MASK·mask: the masked classes drop out of a softmax. */
export function dropClasses<T>(o: Ops<T>, z: T, mask: T): T {
  return o.sub(z, o.mul(mask, o.scalar(MASK)));
}

/** x / by, skipping the op when by is 1. */
export function divideBy<T>(o: Ops<T>, x: T, by: number): T {
  return by === 1 ? x : o.div(x, o.scalar(by));
}

/** x · by, skipping the op when by is 1. */
export function times<T>(o: Ops<T>, x: T, by: number): T {
  return by === 1 ? x : o.mul(x, o.scalar(by));
}

/** log(exp(a) + exp(b)) elementwise, finite when both are very negative. */
export function logAddExp<T>(o: Ops<T>, a: T, b: T): T {
  const m = o.maximum(a, b);
  return o.add(m, o.log(o.add(o.exp(o.sub(a, m)), o.exp(o.sub(b, m)))));
}
