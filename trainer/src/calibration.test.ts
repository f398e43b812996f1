import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { fitTemperature, scaledNll } from './calibration.js';

/** Logits z and labels drawn from softmax(z / trueT): a model whose logits are too sharp by trueT. */
function overconfident(rows: number, classes: number, trueT: number, seed = 1): { logits: Float32Array; labels: Int32Array } {
  const rand = mulberry32(seed);
  const logits = new Float32Array(rows * classes);
  const labels = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const p: number[] = [];
    for (let c = 0; c < classes; c++) {
      logits[r * classes + c] = (rand() - 0.5) * 12;
      p.push(Math.exp(logits[r * classes + c]! / trueT));
    }
    const total = p.reduce((a, b) => a + b, 0);
    let u = rand() * total;
    let y = 0;
    while (y < classes - 1 && u > p[y]!) u -= p[y++]!;
    labels[r] = y;
  }
  return { logits, labels };
}

describe('temperature scaling', () => {
  it('recovers the temperature the labels were drawn with', () => {
    for (const trueT of [0.5, 1, 3]) {
      const { logits, labels } = overconfident(20_000, 10, trueT);
      const fit = fitTemperature(logits, labels, 10);
      expect(fit.temperature).toBeGreaterThan(trueT * 0.93);
      expect(fit.temperature).toBeLessThan(trueT * 1.07);
      expect(fit.rows).toBe(20_000);
      expect(fit.nllAfter).toBeLessThanOrEqual(fit.nllBefore);
    }
  });

  it('finds the minimum of the NLL (checked against a grid) and reports the NLL at τ = 1 and at τ', () => {
    const { logits, labels } = overconfident(3_000, 5, 2.2, 7);
    const fit = fitTemperature(logits, labels, 5);
    let best = Infinity;
    for (let t = 0.5; t <= 6; t += 0.01) best = Math.min(best, scaledNll(logits, labels, 5, 1 / t));
    expect(fit.nllAfter).toBeLessThanOrEqual(best + 1e-9);
    expect(fit.nllBefore).toBeCloseTo(scaledNll(logits, labels, 5, 1), 12);
  });

  it('ignores unlabelled rows (−1)', () => {
    const { logits, labels } = overconfident(4_000, 10, 2);
    const masked = Int32Array.from(labels, (y, r) => (r % 2 === 0 ? y : -1));
    const even = Int32Array.from({ length: 2_000 }, (_, i) => labels[2 * i]!);
    const evenLogits = new Float32Array(2_000 * 10);
    for (let i = 0; i < 2_000; i++) evenLogits.set(logits.subarray(2 * i * 10, (2 * i + 1) * 10), i * 10);
    const a = fitTemperature(logits, masked, 10);
    const b = fitTemperature(evenLogits, even, 10);
    expect(a.rows).toBe(2_000);
    expect(a.temperature).toBeCloseTo(b.temperature, 6);
  });

  it('rejects bad input with a clear error', () => {
    expect(() => fitTemperature(new Float32Array(20), Int32Array.from([-1, -1]), 10)).toThrow(/labelled rows/);
    expect(() => fitTemperature(new Float32Array(19), Int32Array.from([0, 1]), 10)).toThrow(/expected 2 rows × 10 classes/);
    expect(() => fitTemperature(new Float32Array(20), Int32Array.from([0, 10]), 10)).toThrow(/out of range/);
  });
});
