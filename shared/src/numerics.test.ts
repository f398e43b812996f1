import { describe, expect, it } from 'vitest';
import { labelStatistics, logSoftmax, logSumExp, rescaleTemperature, softmax, topK } from './numerics.js';

// Reference values computed independently in float64 with Python's math.fsum
// (max-shifted log-sum-exp), not with this code.
const golden = [
  {
    x: [1, 2, 3],
    lse: 3.4076059644443806,
    p: [0.09003057317038043, 0.24472847105479759, 0.6652409557748217],
  },
  {
    x: [1000, 1000.5, -1000],
    lse: 1000.9740769841801,
    p: [0.3775406687981475, 0.622459331201858, 0],
  },
  {
    x: [-3.5, 0.25, 7.125, 2],
    lse: 7.131979403030516,
    p: [2.4131816461278665e-5, 0.001026110946560496, 0.9930448964380225, 0.005904860798955803],
  },
];

describe('numerics', () => {
  it('logSumExp, softmax and logSoftmax match float64 references, without overflow', () => {
    for (const g of golden) {
      const C = g.x.length;
      expect(logSumExp(g.x, C)[0]).toBeCloseTo(g.lse, 12);
      const p = softmax(g.x, C);
      const lp = logSoftmax(g.x, C);
      g.p.forEach((want, c) => {
        expect(p[c]).toBeCloseTo(want, 14);
        expect(lp[c]).toBeCloseTo(g.x[c]! - g.lse, 11);
      });
    }
  });

  it('works row by row on a flat matrix and into float32 outputs', () => {
    const flat = [...golden[0]!.x, 3, 2, 1];
    const lse = logSumExp(flat, 3);
    expect(lse[0]).toBeCloseTo(lse[1]!, 14);
    const out = softmax(flat, 3, new Float32Array(6));
    expect(out[5]).toBeCloseTo(0.09003057317038043, 7);
    expect(() => logSumExp([1, 2, 3, 4], 3)).toThrow(/rows of 3/);
  });

  it('rescales stored logits z/T to any T′ exactly as z/T′', () => {
    const z = [4, -2, 0.5];
    const T = 4;
    const stored = new Float64Array(z.map((v) => v / T));
    const atTwo = rescaleTemperature(stored, T, 2);
    z.forEach((v, i) => expect(atTwo[i]).toBeCloseTo(v / 2, 15));
    expect(() => rescaleTemperature(stored, T, 0)).toThrow(/temperature/);
  });

  it('topK returns the k largest per row in descending order, lower index first on ties', () => {
    const x = [0.1, 5, 3, 5, -1, /* row 2 */ 9, 8, 7, 6, 10];
    const { indices, values } = topK(x, 5, 3);
    expect([...indices]).toEqual([1, 3, 2, 4, 0, 1]);
    expect([...values]).toEqual([5, 5, 3, 10, 9, 8]);
    expect(() => topK(x, 5, 6)).toThrow(/k must be/);
  });

  it('labelStatistics gives argmax, confidence, entropy and margin of softmax', () => {
    // Python float64: p = softmax([2, 1, 0.5, -1])
    const s = labelStatistics([2, 1, 0.5, -1], 4);
    expect(s.pseudoLabel[0]).toBe(0);
    expect(s.confidence[0]).toBeCloseTo(0.6094600375988771, 6);
    expect(s.entropy[0]).toBeCloseTo(1.0144027755025642, 6);
    expect(s.margin[0]).toBeCloseTo(0.385252219550676, 6);
  });
});
