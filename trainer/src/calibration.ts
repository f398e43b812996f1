/**
 * Post-hoc temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks",
 * arXiv:1706.04599): one temperature τ > 0 for the student's logits, fitted on held-out labelled
 * rows to minimise the negative log-likelihood of softmax(z / τ). It changes confidences, never
 * the predicted class. Pure functions over logits; the trainer folds τ into the last layer.
 */

/** Mean NLL of softmax(β·z) over the rows with a label ≥ 0 (β = 1/τ). */
export function scaledNll(logits: Float32Array, labels: Int32Array, classes: number, beta: number): number {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < labels.length; r++) {
    const y = labels[r]!;
    if (y < 0) continue;
    const o = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, beta * logits[o + c]!);
    let s = 0;
    for (let c = 0; c < classes; c++) s += Math.exp(beta * logits[o + c]! - max);
    sum += max + Math.log(s) - beta * logits[o + y]!;
    n++;
  }
  return sum / n;
}

export interface TemperatureFit {
  readonly temperature: number;
  readonly rows: number;
  readonly nllBefore: number;
  readonly nllAfter: number;
}

/**
 * The τ in [1/maxBeta, 1/minBeta] minimising the NLL. The NLL is convex in β = 1/τ (a log-sum-exp
 * of linear functions minus a linear one), so a golden-section search on β finds the minimum.
 */
export function fitTemperature(
  logits: Float32Array,
  labels: Int32Array,
  classes: number,
  opts: { minBeta?: number; maxBeta?: number; tol?: number } = {},
): TemperatureFit {
  if (!Number.isInteger(classes) || classes < 2) throw new RangeError(`classes must be an integer ≥ 2, got ${classes}`);
  if (logits.length !== labels.length * classes)
    throw new RangeError(`logits has ${logits.length} values, expected ${labels.length} rows × ${classes} classes`);
  const rows = labels.reduce((n, y) => n + (y >= 0 ? 1 : 0), 0);
  if (rows === 0) throw new RangeError('temperature scaling needs labelled rows; the calibration set has none');
  for (const y of labels) if (y >= classes) throw new RangeError(`label ${y} is out of range for ${classes} classes`);
  const f = (beta: number) => scaledNll(logits, labels, classes, beta);
  let lo = opts.minBeta ?? 0.02;
  let hi = opts.maxBeta ?? 50;
  const tol = opts.tol ?? 1e-6;
  const g = (Math.sqrt(5) - 1) / 2;
  let a = hi - g * (hi - lo);
  let b = lo + g * (hi - lo);
  let fa = f(a);
  let fb = f(b);
  while (hi - lo > tol * Math.max(1, lo)) {
    if (fa <= fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - g * (hi - lo);
      fa = f(a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + g * (hi - lo);
      fb = f(b);
    }
  }
  const beta = (lo + hi) / 2;
  const nllBefore = f(1);
  const nllAfter = f(beta);
  // τ = 1 lies inside the search range, so the fit never makes the NLL worse; keep 1 if it would.
  return nllAfter <= nllBefore ? { temperature: 1 / beta, rows, nllBefore, nllAfter } : { temperature: 1, rows, nllBefore, nllAfter: nllBefore };
}
