/**
 * The graph form of every batch loss against its TF.js form (the functions in ../losses/, which
 * are pinned to float64 goldens): the same batch, the same logits, the same loss terms and the
 * same dL/dlogits within 1e-5. Batches mix rows with and without labels and teachers, so the
 * row masks are exercised too.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { selectBackend } from '../backend.js';
import { batchLossFn, batchLossGraph, type BatchLossSettings } from '../batch-loss.js';
import type { TrainBatch } from '../data.js';
import { differentiate } from '../internal/autodiff/backward.js';
import { inferShapes, type Shape } from '../internal/autodiff/shapes.js';
import type { Distill } from '../recipe.js';
import type { TeacherPlan } from '../teacher-plan.js';

const N = 12;
const C = 6;
const classes = Array.from({ length: C }, (_, i) => `c${i}`);
const rand = mulberry32(17);
const randn = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);

beforeAll(() => selectBackend('cpu'));

function batch(slots: TrainBatch['slots']): TrainBatch {
  return {
    rows: N,
    x: new Float32Array(N),
    // Row 3 and 7 unlabelled; rows 5 and 9 without teacher targets.
    labels: Int32Array.from({ length: N }, (_, r) => (r === 3 || r === 7 ? -1 : (r * 5) % C)),
    hasTeacher: Uint8Array.from({ length: N }, (_, r) => (r === 5 || r === 9 ? 0 : 1)),
    slots,
  };
}

const single = (slots = 1): TeacherPlan => ({ caches: [], layout: { inputSize: 1, slots: Array.from({ length: slots }, () => ({ kind: 'dense', classes: C }) as const) }, mode: 'single', classes, classIndex: [], union: 'subsets' });
const halves = [[0, 1, 2], [3, 4, 5]];
const union = (u: TeacherPlan['union'], extra: Partial<TeacherPlan> = {}): TeacherPlan => ({ caches: [], layout: { inputSize: 1, slots: halves.map((h) => ({ kind: 'dense', classes: h.length }) as const) }, mode: 'union', classes, classIndex: halves, union: u, ...extra });

function topKSlot(k: number, T: number): TrainBatch['slots'][number] {
  const indices = new Int32Array(N * k);
  const logits = new Float32Array(N * k);
  const logsumexp = new Float32Array(N);
  for (let r = 0; r < N; r++) {
    const z = Array.from(randn(C, 3), (v) => v / T);
    const order = z.map((v, c) => [v, c] as const).sort((a, b) => b[0] - a[0]);
    const m = Math.max(...z);
    logsumexp[r] = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    for (let j = 0; j < k; j++) {
      indices[r * k + j] = order[j]![1];
      logits[r * k + j] = order[j]![0];
    }
  }
  return { logits, indices, logsumexp };
}

interface Case {
  readonly name: string;
  readonly plan: TeacherPlan;
  readonly distill: Distill;
  readonly slots: TrainBatch['slots'];
  readonly ceWeight?: number;
  readonly kdWeight?: number;
}

const T = 2;
const dense = [{ logits: randn(N * C, 4) }];
const cases: Case[] = [
  { name: 'CE only (scratch)', plan: { ...single(), mode: 'none', layout: { inputSize: 1, slots: [] } }, distill: { method: 'scratch', params: {} }, slots: [], kdWeight: 0 },
  { name: 'KD + CE', plan: single(), distill: { method: 'kd', params: { temperature: T } }, slots: dense },
  { name: 'KD only, a kd weight of 0.7', plan: single(), distill: { method: 'kd', params: { temperature: 0.25 } }, slots: dense, ceWeight: 0, kdWeight: 0.7 },
  { name: 'DKD', plan: single(), distill: { method: 'dkd', params: { alpha: 1, beta: 8, temperature: 4 } }, slots: dense },
  { name: 'NKD', plan: single(), distill: { method: 'nkd', params: { temperature: 1, gamma: 1.5 } }, slots: dense },
  { name: 'DIST', plan: single(), distill: { method: 'dist', params: { beta: 1, gamma: 2, temperature: T } }, slots: dense },
  { name: 'LS-KD', plan: single(), distill: { method: 'lskd', params: { temperature: T } }, slots: dense },
  { name: 'two teachers with the same classes, averaged', plan: single(2), distill: { method: 'kd', params: { temperature: T } }, slots: [dense[0]!, { logits: randn(N * C, 2) }] },
  { name: 'DKD from two averaged teachers', plan: single(2), distill: { method: 'dkd', params: { alpha: 1, beta: 2, temperature: T } }, slots: [dense[0]!, { logits: randn(N * C, 2) }] },
  { name: 'top-k cache (k = 3 of 6)', plan: { ...single(), layout: { inputSize: 1, slots: [{ kind: 'topk', k: 3 }] } }, distill: { method: 'kd', params: { temperature: T } }, slots: [topKSlot(3, T)] },
  { name: 'top-k cache with every class kept', plan: { ...single(), layout: { inputSize: 1, slots: [{ kind: 'topk', k: C }] } }, distill: { method: 'kd', params: { temperature: T } }, slots: [topKSlot(C, T)] },
  { name: 'union: subsets (two teachers, disjoint halves)', plan: union('subsets'), distill: { method: 'kd', params: { temperature: T } }, slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })), ceWeight: 0 },
  { name: 'union: merged', plan: union('merged'), distill: { method: 'kd', params: { temperature: T } }, slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })) },
  {
    name: 'union: balanced (scales and offsets)',
    plan: union('balanced', { scales: Float32Array.of(1.4, 0.8), offsets: Float32Array.of(0.1, -0.3, 0.2, 0.5, 0, -0.1) }),
    distill: { method: 'kd', params: { temperature: 1 } },
    slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })),
  },
];

describe('loss graphs equal the TF.js losses (value and dL/dlogits)', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const b = batch(c.slots);
      const settings: BatchLossSettings = { plan: c.plan, distill: c.distill, ceWeight: c.ceWeight ?? 1, kdWeight: c.kdWeight ?? 1, temperature: 'temperature' in c.distill.params ? (c.distill.params as { temperature: number }).temperature : 1 };
      const logits = randn(N * C, 3);

      // TF.js: the terms and the gradient of the total.
      const fn = batchLossFn(b, settings);
      const want: Record<string, number> = {};
      const dz = tf.tidy(() =>
        tf.grad((z: tf.Tensor) => {
          const r = fn(z as tf.Tensor2D);
          for (const [k, v] of Object.entries(r.terms)) want[k] = v.dataSync()[0]!;
          return r.total;
        })(tf.tensor2d(logits, [N, C])),
      );
      const wantGrad = dz.dataSync().slice();
      dz.dispose();

      // The graph: logits as an input, differentiated by the rules.
      const loss = batchLossGraph(b, settings);
      const g = new Graph('loss');
      g.input('logits', ['N', C]);
      const { total, terms } = loss.build(g, 'logits', C);
      const shapes = inferShapes(g, new Map<string, Shape>(g.inputs.map((v) => [v.name, v.dims.map((d) => (typeof d === 'number' ? d : -1))])));
      const grad = differentiate({ forward: g, shapes, wrt: ['logits'], output: total, outputGrad: g.constant('seed', [1], []), into: g }).get('logits')!;
      const outs = Object.entries(terms).map(([k, name]) => g.node('Identity', [name], {}, `out_${k}`));
      for (const o of outs) g.output(o, []);
      g.output(grad, ['N', C]);
      const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
      try {
        const got = await session.runMany({ ...loss.feeds(), logits: { data: logits, dims: [N, C] } }, [...outs, grad]);
        expect(Object.keys(terms).sort()).toEqual(Object.keys(want).sort());
        for (const k of Object.keys(want)) expect(Math.abs(got[`out_${k}`]![0]! - want[k]!), k).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[k]!)));
        let worst = 0;
        for (let i = 0; i < wantGrad.length; i++) worst = Math.max(worst, Math.abs(got[grad]![i]! - wantGrad[i]!));
        expect(worst).toBeLessThan(1e-5);
        expect(wantGrad.some((v) => v !== 0)).toBe(true);
      } finally {
        await session.release();
      }
    });
  }
});
