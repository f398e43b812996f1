/**
 * Row-wise numerics over flat row-major [rows, classes] matrices. Accumulation is in float64
 * whatever the storage type, and every reduction subtracts the row maximum first so that large
 * logits cannot overflow exp().
 */

export type FloatArray = Float32Array | Float64Array;

function checkShape(values: ArrayLike<number>, classes: number): number {
  if (!Number.isInteger(classes) || classes <= 0) throw new RangeError(`classes must be a positive integer, got ${classes}`);
  if (values.length % classes !== 0) {
    throw new RangeError(`a matrix of ${values.length} values does not split into rows of ${classes} classes`);
  }
  return values.length / classes;
}

/** log Σ exp(x) over each row. */
export function logSumExp(values: ArrayLike<number>, classes: number, out = new Float64Array(checkShape(values, classes))): Float64Array {
  const rows = checkShape(values, classes);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, values[o + c]!);
    if (max === -Infinity || !Number.isFinite(max)) {
      // All -Inf → -Inf; any +Inf or NaN propagates as is.
      out[r] = max;
      continue;
    }
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(values[o + c]! - max);
    out[r] = max + Math.log(sum);
  }
  return out;
}

/** log softmax(x) over each row. */
export function logSoftmax<T extends FloatArray>(values: ArrayLike<number>, classes: number, out: T): T;
export function logSoftmax(values: ArrayLike<number>, classes: number): Float64Array;
export function logSoftmax(values: ArrayLike<number>, classes: number, out?: FloatArray): FloatArray {
  const rows = checkShape(values, classes);
  const result = out ?? new Float64Array(values.length);
  const lse = logSumExp(values, classes);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    for (let c = 0; c < classes; c++) result[o + c] = values[o + c]! - lse[r]!;
  }
  return result;
}

/** softmax(x) over each row. */
export function softmax<T extends FloatArray>(values: ArrayLike<number>, classes: number, out: T): T;
export function softmax(values: ArrayLike<number>, classes: number): Float64Array;
export function softmax(values: ArrayLike<number>, classes: number, out?: FloatArray): FloatArray {
  const result = out ?? new Float64Array(values.length);
  logSoftmax(values, classes, result);
  for (let i = 0; i < result.length; i++) result[i] = Math.exp(result[i]!);
  return result;
}

/**
 * Caches store z/T. A trainer that wants temperature T' needs z/T' = (z/T)·(T/T').
 */
export function rescaleTemperature<T extends FloatArray>(scaled: T, storedTemperature: number, wantedTemperature: number, out?: T): T {
  assertTemperature(storedTemperature);
  assertTemperature(wantedTemperature);
  const result = out ?? (scaled.slice() as T);
  const factor = storedTemperature / wantedTemperature;
  if (factor === 1 && result === scaled) return result;
  for (let i = 0; i < scaled.length; i++) result[i] = scaled[i]! * factor;
  return result;
}

export function assertTemperature(t: number): void {
  if (!(Number.isFinite(t) && t > 0)) throw new RangeError(`temperature must be a finite number > 0, got ${t}`);
}

export interface TopK {
  /** [rows, k] class indices, ordered by descending value (ties: lower index first). */
  readonly indices: Uint32Array;
  /** [rows, k] the values at those indices. */
  readonly values: Float32Array;
}

/** The k largest entries of each row. O(rows·C·k) with a small insertion buffer, fine for k ≪ C. */
export function topK(values: ArrayLike<number>, classes: number, k: number): TopK {
  const rows = checkShape(values, classes);
  if (!Number.isInteger(k) || k <= 0 || k > classes) throw new RangeError(`k must be an integer in [1, ${classes}], got ${k}`);
  const indices = new Uint32Array(rows * k);
  const kept = new Float32Array(rows * k);
  const bufV = new Float64Array(k);
  const bufI = new Uint32Array(k);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let n = 0;
    for (let c = 0; c < classes; c++) {
      const v = values[o + c]!;
      if (n === k && !(v > bufV[k - 1]!)) continue;
      // Insert v keeping bufV sorted descending; equal values keep the earlier index first.
      let j = n < k ? n++ : k - 1;
      while (j > 0 && v > bufV[j - 1]!) {
        bufV[j] = bufV[j - 1]!;
        bufI[j] = bufI[j - 1]!;
        j--;
      }
      bufV[j] = v;
      bufI[j] = c;
    }
    indices.set(bufI, r * k);
    for (let j = 0; j < k; j++) kept[r * k + j] = bufV[j]!;
  }
  return { indices, values: kept };
}

export interface LabelStatistics {
  /** argmax class. */
  readonly pseudoLabel: Int32Array;
  /** max softmax probability. */
  readonly confidence: Float32Array;
  /** Shannon entropy of softmax, in nats. */
  readonly entropy: Float32Array;
  /** top-1 minus top-2 probability. */
  readonly margin: Float32Array;
}

/** Pseudo-label statistics of softmax(logits) per row. */
export function labelStatistics(logits: ArrayLike<number>, classes: number): LabelStatistics {
  const rows = checkShape(logits, classes);
  const logp = logSoftmax(logits, classes);
  const pseudoLabel = new Int32Array(rows);
  const confidence = new Float32Array(rows);
  const entropy = new Float32Array(rows);
  const margin = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * classes;
    let best = -1;
    let p1 = -Infinity;
    let p2 = -Infinity;
    let h = 0;
    for (let c = 0; c < classes; c++) {
      const lp = logp[o + c]!;
      const p = Math.exp(lp);
      if (p > 0) h -= p * lp;
      if (p > p1) {
        p2 = p1;
        p1 = p;
        best = c;
      } else if (p > p2) {
        p2 = p;
      }
    }
    pseudoLabel[r] = best;
    confidence[r] = p1;
    entropy[r] = h;
    margin[r] = classes > 1 ? p1 - p2 : 1;
  }
  return { pseudoLabel, confidence, entropy, margin };
}
