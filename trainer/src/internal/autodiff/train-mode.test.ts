/**
 * BatchNormalization in training mode, as the train step rewrites it: its gradients (input,
 * scale, bias) against float64 central differences of batch normalisation with batch statistics,
 * and the running statistics it hands on.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { differentiate } from './backward.js';
import { inferShapes, type Shape } from './shapes.js';
import { appendTrainingNodes } from './train-mode.js';

const [N, C, H, W] = [3, 2, 3, 2];
const EPS = 1e-3;
const MOMENTUM = 0.9;

/** Σ y·R for y = γ·(x − μ_B)/√(σ²_B + ε) + β, statistics over N, H, W per channel (float64). */
function reference(x: Float64Array, gamma: Float64Array, beta: Float64Array, R: Float64Array): { loss: number; mean: number[]; variance: number[] } {
  let loss = 0;
  const mean: number[] = [];
  const variance: number[] = [];
  for (let c = 0; c < C; c++) {
    const idx: number[] = [];
    for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) idx.push((n * C + c) * H * W + i);
    const mu = idx.reduce((s, i) => s + x[i]!, 0) / idx.length;
    const v = idx.reduce((s, i) => s + (x[i]! - mu) ** 2, 0) / idx.length;
    mean.push(mu);
    variance.push(v);
    for (const i of idx) loss += (gamma[c]! * ((x[i]! - mu) / Math.sqrt(v + EPS)) + beta[c]!) * R[i]!;
  }
  return { loss, mean, variance };
}

describe('BatchNormalization in training mode', () => {
  it('matches float64 finite differences and updates the running statistics', async () => {
    const student = new Graph('bn');
    student.input('x', ['N', C, H, W]);
    const stats = { mean: Float32Array.of(0.5, -0.25), variance: Float32Array.of(1, 2) };
    student.node(
      'BatchNormalization',
      [
        'x',
        student.initializer('gamma', new Float32Array(C), [C]),
        student.initializer('beta', new Float32Array(C), [C]),
        student.initializer('rm', stats.mean, [C]),
        student.initializer('rv', stats.variance, [C]),
      ],
      { epsilon: { float: EPS }, momentum: { float: MOMENTUM } },
      'y',
    );

    const g = new Graph('step');
    g.input('x', ['N', C, H, W]);
    for (const name of ['gamma', 'beta', 'rm', 'rv']) g.input(name, [C]);
    const rewrite = appendTrainingNodes(g, student, [{ name: 'x', shape: [-1, C, H, W] }]);
    expect(rewrite.needsBatchRows).toBe(true);
    g.input('R', ['N', C, H, W]);
    const total = g.node('ReduceSum', [g.node('Mul', ['y', 'R'])], { keepdims: 0 });
    const known = new Map<string, Shape>(g.inputs.map((v) => [v.name, v.dims.map((d) => (typeof d === 'number' ? d : -1))]));
    const grads = differentiate({
      forward: g,
      shapes: inferShapes(g, known),
      wrt: ['x', 'gamma', 'beta'],
      output: total,
      outputGrad: g.constant('seed', [1], []),
      into: g,
    });
    const outs = ['x', 'gamma', 'beta'].map((n) => grads.get(n)!);
    outs.forEach((o, i) => g.output(o, i === 0 ? ['N', C, H, W] : [C]));
    for (const b of rewrite.buffers) g.output(b.next, [C]);

    const rand = mulberry32(11);
    const x = Float64Array.from({ length: N * C * H * W }, () => rand() * 4 - 1);
    const gamma = Float64Array.of(1.3, 0.7);
    const beta = Float64Array.of(0.2, -0.4);
    const R = Float64Array.from({ length: x.length }, () => rand() * 2 - 1);
    const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
    try {
      const f32 = (a: Float64Array) => Float32Array.from(a);
      const got = await session.runMany(
        {
          x: { data: f32(x), dims: [N, C, H, W] },
          gamma: { data: f32(gamma), dims: [C] },
          beta: { data: f32(beta), dims: [C] },
          rm: { data: stats.mean, dims: [C] },
          rv: { data: stats.variance, dims: [C] },
          R: { data: f32(R), dims: [N, C, H, W] },
          batch_rows: { data: Float32Array.of(N), dims: [1] },
        },
        [...outs, ...rewrite.buffers.map((b) => b.next)],
      );
      const base = [x, gamma, beta].map((a) => Float64Array.from(Float32Array.from(a)));
      const eps = 1e-4;
      base.forEach((arr, k) => {
        let worst = 0;
        for (let j = 0; j < arr.length; j++) {
          const plus = base.map((a) => a.slice());
          const minus = base.map((a) => a.slice());
          plus[k]![j]! += eps;
          minus[k]![j]! -= eps;
          const fd = (reference(plus[0]!, plus[1]!, plus[2]!, R).loss - reference(minus[0]!, minus[1]!, minus[2]!, R).loss) / (2 * eps);
          worst = Math.max(worst, Math.abs(got[outs[k]!]![j]! - fd) / Math.max(1, Math.abs(fd)));
        }
        expect(worst, ['x', 'gamma', 'beta'][k]).toBeLessThan(1e-3);
      });
      const { mean, variance } = reference(base[0]!, base[1]!, base[2]!, R);
      const [nextMean, nextVar] = rewrite.buffers.map((b) => got[b.next]!);
      for (let c = 0; c < C; c++) {
        expect(nextMean![c]).toBeCloseTo(MOMENTUM * stats.mean[c]! + (1 - MOMENTUM) * mean[c]!, 5);
        expect(nextVar![c]).toBeCloseTo(MOMENTUM * stats.variance[c]! + (1 - MOMENTUM) * variance[c]!, 5);
      }
    } finally {
      await session.release();
    }
  });
});
