import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { balanceOffsets } from './union-balance.js';

/** Rows of class k (in equal numbers) get logit 3 on k plus noise, then a per-class bias is added. */
function biased(rows: number, classes: number, bias: number[], seed = 1): Float32Array {
  const rand = mulberry32(seed);
  const z = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) for (let k = 0; k < classes; k++) z[r * classes + k] = (k === r % classes ? 3 : 0) + (rand() - 0.5) + bias[k]!;
  return z;
}

function shares(z: Float32Array, rows: number, classes: number, b: ArrayLike<number>): number[] {
  const s = new Array<number>(classes).fill(0);
  for (let r = 0; r < rows; r++) {
    const e = Array.from({ length: classes }, (_, k) => Math.exp(z[r * classes + k]! + b[k]!));
    const sum = e.reduce((a, v) => a + v, 0);
    e.forEach((v, k) => (s[k]! += v / sum / rows));
  }
  return s;
}

describe('balanceOffsets', () => {
  it('undoes a per-class bias on a balanced set: the offsets are minus the bias (centred) and the shares become uniform', () => {
    const bias = [2, -1, 0.5, 0, -1.5];
    const z = biased(2000, 5, bias);
    const before = shares(z, 2000, 5, new Float64Array(5));
    expect(Math.max(...before) / Math.min(...before)).toBeGreaterThan(5); // the bias really skews the merged teacher
    const fit = balanceOffsets(z, 2000, 5);
    const mean = bias.reduce((a, v) => a + v, 0) / 5;
    fit.offsets.forEach((b, k) => expect(b).toBeCloseTo(-(bias[k]! - mean), 1));
    expect(fit.offsets.reduce((a, v) => a + v, 0)).toBeCloseTo(0, 9);
    expect(fit.residual).toBeLessThanOrEqual(1e-5);
    // Checked independently of the function's own bookkeeping.
    for (const s of shares(z, 2000, 5, fit.offsets)) expect(s).toBeCloseTo(0.2, 4);
    fit.sharesBefore.forEach((s, k) => expect(s).toBeCloseTo(before[k]!, 6));
  });

  it('targets a given prior instead of uniform shares', () => {
    const z = biased(1000, 4, [0, 0, 0, 0], 3);
    const fit = balanceOffsets(z, 1000, 4, { prior: [4, 3, 2, 1] });
    shares(z, 1000, 4, fit.offsets).forEach((s, k) => expect(s).toBeCloseTo([0.4, 0.3, 0.2, 0.1][k]!, 4));
  });

  it('leaves logits that are already balanced alone, and stops at the iteration cap', () => {
    const z = biased(1000, 4, [0, 0, 0, 0], 5);
    const fit = balanceOffsets(z, 1000, 4);
    for (const b of fit.offsets) expect(Math.abs(b)).toBeLessThan(0.05);
    const capped = balanceOffsets(biased(1000, 4, [5, 0, 0, -5]), 1000, 4, { maxIterations: 2 });
    expect(capped.iterations).toBe(2);
    expect(capped.residual).toBeGreaterThan(1e-3);
  });

  it('rejects malformed input', () => {
    expect(() => balanceOffsets(new Float32Array(10), 3, 4)).toThrow(/10 logits for 3 × 4/);
    expect(() => balanceOffsets(new Float32Array(4), 4, 1)).toThrow(/classes ≥ 2/);
    expect(() => balanceOffsets(new Float32Array(8), 4, 2, { prior: [1, 0] })).toThrow(/positive/);
    expect(() => balanceOffsets(new Float32Array(8), 4, 2, { prior: [1, 1, 1] })).toThrow(/2 positive/);
  });
});
