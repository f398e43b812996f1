/**
 * The batch loss (CE on labelled rows + the distillation term on rows with a teacher, for every
 * teacher layout) on both backends: the same batch, the same logits, the same loss terms and the
 * same dL/dlogits within 1e-5. Batches mix rows with and without labels and teachers, so the row
 * masks are exercised, and the masked means are checked against the eager losses on the rows
 * picked out by hand.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { selectBackend } from './backend.js';
import { batchLoss, type BatchLossSettings } from './batch-loss.js';
import type { TrainBatch } from './data.js';
import { evaluateOnnx, evaluateTfjs, type LossOf } from './losses/both-backends.test-util.js';
import { crossEntropyLoss, distillLossEager, temperatureOf, type Distill } from './losses/index.js';
import type { TeacherPlan } from './teacher-plan.js';

beforeAll(() => selectBackend('cpu'));

const N = 12;
const C = 6;
const classes = Array.from({ length: C }, (_, i) => `c${i}`);
const rand = mulberry32(17);
const randn = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);

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

const single = (slots = 1): TeacherPlan => ({
  caches: [],
  layout: { inputSize: 1, slots: Array.from({ length: slots }, () => ({ kind: 'dense', classes: C }) as const) },
  mode: 'single',
  classes,
  classIndex: [],
  union: 'subsets',
});
const halves = [
  [0, 1, 2],
  [3, 4, 5],
];
const union = (u: TeacherPlan['union'], extra: Partial<TeacherPlan> = {}): TeacherPlan => ({
  caches: [],
  layout: { inputSize: 1, slots: halves.map((h) => ({ kind: 'dense', classes: h.length }) as const) },
  mode: 'union',
  classes,
  classIndex: halves,
  union: u,
  ...extra,
});

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
  {
    name: 'CE only (scratch)',
    plan: { ...single(), mode: 'none', layout: { inputSize: 1, slots: [] } },
    distill: { method: 'scratch', params: {} },
    slots: [],
    kdWeight: 0,
  },
  { name: 'KD + CE', plan: single(), distill: { method: 'kd', params: { temperature: T } }, slots: dense },
  { name: 'KD only, a kd weight of 0.7', plan: single(), distill: { method: 'kd', params: { temperature: 0.25 } }, slots: dense, ceWeight: 0, kdWeight: 0.7 },
  { name: 'DKD', plan: single(), distill: { method: 'dkd', params: { alpha: 1, beta: 8, temperature: 4 } }, slots: dense },
  { name: 'NKD', plan: single(), distill: { method: 'nkd', params: { temperature: 1, gamma: 1.5 } }, slots: dense },
  { name: 'DIST', plan: single(), distill: { method: 'dist', params: { beta: 1, gamma: 2, temperature: T } }, slots: dense },
  { name: 'LS-KD', plan: single(), distill: { method: 'lskd', params: { temperature: T } }, slots: dense },
  {
    name: 'two teachers with the same classes, averaged',
    plan: single(2),
    distill: { method: 'kd', params: { temperature: T } },
    slots: [dense[0]!, { logits: randn(N * C, 2) }],
  },
  {
    name: 'DKD from two averaged teachers',
    plan: single(2),
    distill: { method: 'dkd', params: { alpha: 1, beta: 2, temperature: T } },
    slots: [dense[0]!, { logits: randn(N * C, 2) }],
  },
  {
    name: 'top-k cache (k = 3 of 6)',
    plan: { ...single(), layout: { inputSize: 1, slots: [{ kind: 'topk', k: 3 }] } },
    distill: { method: 'kd', params: { temperature: T } },
    slots: [topKSlot(3, T)],
  },
  {
    name: 'top-k cache with every class kept',
    plan: { ...single(), layout: { inputSize: 1, slots: [{ kind: 'topk', k: C }] } },
    distill: { method: 'kd', params: { temperature: T } },
    slots: [topKSlot(C, T)],
  },
  {
    name: 'union: subsets (two teachers, disjoint halves)',
    plan: union('subsets'),
    distill: { method: 'kd', params: { temperature: T } },
    slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })),
    ceWeight: 0,
  },
  {
    name: 'union: merged',
    plan: union('merged'),
    distill: { method: 'kd', params: { temperature: T } },
    slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })),
  },
  {
    name: 'union: balanced (scales and offsets)',
    plan: union('balanced', { scales: Float32Array.of(1.4, 0.8), offsets: Float32Array.of(0.1, -0.3, 0.2, 0.5, 0, -0.1) }),
    distill: { method: 'kd', params: { temperature: 1 } },
    slots: halves.map((h) => ({ logits: randn(N * h.length, 3) })),
  },
];

function settingsOf(c: Case): BatchLossSettings {
  return { plan: c.plan, distill: c.distill, ceWeight: c.ceWeight ?? 1, kdWeight: c.kdWeight ?? 1, temperature: temperatureOf(c.distill) };
}

/** The batch loss as a function of the logits, `total` first (the term differentiated). */
function lossOf(b: TrainBatch, s: BatchLossSettings): LossOf {
  const loss = batchLoss(b, s);
  return (o, logits, x) => {
    const { total, terms } = loss.compute(o, { logits }, x);
    return { total, ...terms };
  };
}

describe('the batch loss agrees on both backends (terms and dL/dlogits)', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const b = batch(c.slots);
      const s = settingsOf(c);
      const logits = { data: randn(N * C, 3), dims: [N, C] };
      const feeds = batchLoss(b, s).feeds();
      const want = evaluateTfjs(lossOf(b, s), logits, feeds);
      const got = await evaluateOnnx(lossOf(b, s), logits, feeds);
      expect(Object.keys(got.terms).sort()).toEqual(Object.keys(want.terms).sort());
      for (const k of Object.keys(want.terms))
        expect(Math.abs(got.terms[k]! - want.terms[k]!), k).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want.terms[k]!)));
      let worst = 0;
      for (let i = 0; i < want.grad.length; i++) worst = Math.max(worst, Math.abs(got.grad[i]! - want.grad[i]!));
      expect(worst).toBeLessThan(1e-5);
      expect(want.grad.some((v) => v !== 0)).toBe(true);
    });
  }
});

describe('masked means equal the losses over the rows picked out', () => {
  for (const name of ['KD + CE', 'DKD', 'DIST']) {
    it(name, () => {
      const c = cases.find((x) => x.name === name)!;
      const b = batch(c.slots);
      const logits = randn(N * C, 3);
      const got = evaluateTfjs(lossOf(b, settingsOf(c)), { data: logits, dims: [N, C] }, batchLoss(b, settingsOf(c)).feeds()).terms;
      const rowsWith = (keep: (r: number) => boolean) => Array.from({ length: N }, (_, r) => r).filter(keep);
      const pick = (data: ArrayLike<number>, rows: number[]) =>
        tf.tensor2d(
          rows.flatMap((r) => Array.from(data).slice(r * C, (r + 1) * C)),
          [rows.length, C],
        );
      const labelled = rowsWith((r) => b.labels[r]! >= 0);
      const taught = rowsWith((r) => b.hasTeacher[r] === 1);
      const ce = crossEntropyLoss(
        pick(logits, labelled),
        tf.tensor1d(
          labelled.map((r) => b.labels[r]!),
          'int32',
        ),
      ).dataSync()[0]!;
      const kd = distillLossEager(
        c.distill,
        pick(logits, taught),
        pick(c.slots[0]!.logits, taught),
        tf.tensor1d(
          taught.map((r) => b.labels[r]!),
          'int32',
        ),
      ).dataSync()[0]!;
      expect(Math.abs(got['ce']! - ce)).toBeLessThan(1e-5 * Math.max(1, ce));
      expect(Math.abs(got['kd']! - kd)).toBeLessThan(1e-5 * Math.max(1, kd));
    });
  }
});
