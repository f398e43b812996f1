/**
 * Golden tests: every loss, written once against the ops, run on both backends (TF.js eager and
 * the ONNX graph in onnxruntime) against float64 values and dL/dstudent computed independently
 * from the papers' formulas (trainer/golden/losses.py, numpy; gradients by central differences).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { logSumExp, topK } from '@distillate/shared';
import { selectBackend } from '../backend.js';
import { BACKENDS, evaluate, type LossOf } from './both-backends.test-util.js';
import golden from './golden.json' with { type: 'json' };
import type { HintLoss } from './hints/hint.js';
import { hintLosses, type HintName } from './hints/registry.js';
import {
  crossEntropy,
  crossEntropyAt,
  DistillSchema,
  distillLoss,
  distillMethods,
  dkdLoss,
  kdLoss,
  subsetKd,
  sampledKd,
  sampledTargets,
  topKBuckets,
  topKKd,
  topKTargets,
  type Feed,
  type MethodName,
  type Rows,
} from './index.js';

beforeAll(() => selectBackend('cpu'));

const N = golden.student.length;
const C = golden.student[0]!.length;
const matrix = (m: number[][]): Feed => ({ data: Float32Array.from(m.flat()), dims: [m.length, m[0]!.length] });
const student = matrix(golden.student);
const teacher = matrix(golden.teacher);
const target = matrix(golden.labels.map((y) => Array.from({ length: C }, (_, c) => (c === y ? 1 : 0))));
const rows: Record<string, Feed> = { rows: { data: new Float32Array(N).fill(1), dims: [N, 1] }, norm: { data: Float32Array.of(1 / N), dims: [1] } };
const rowsOf = <T>(x: Readonly<Record<string, T>>): Rows<T> => ({ mask: x['rows']!, norm: x['norm']! });

/** A registered method with these params, as the batch loss runs it. */
function method(name: MethodName, params: Record<string, number>): LossOf {
  const d = DistillSchema.parse({ method: name, params });
  if (d.method === 'scratch') throw new Error('not a method');
  const loss = distillLoss(d);
  return (o, s, x) => ({ loss: loss(o, { student: s, teacher: x['teacher']!, target: x['target']!, classes: C, rows: rowsOf(x) }) });
}

interface Case {
  readonly name: string;
  readonly loss: LossOf;
  readonly inputs: Record<string, Feed>;
  readonly value: number;
  readonly grad: number[][];
}

const topKFeeds = (k: number, T: number): Record<string, Feed> => {
  const scaled = golden.teacher.flat().map((v) => v / T);
  const top = topK(scaled, C, k);
  const t = topKTargets({ indices: top.indices, logits: top.values, logsumexp: logSumExp(scaled, C) }, N, k, C, undefined, true);
  return { p: t.p, kept: t.kept, tail: t.tail, entropy: t.entropy, logBuckets: t.logBuckets! };
};

/** A registered method on the top-k cache's k + 1 buckets (topKBuckets), as the token batch loss runs it. */
function bucketed(name: 'rkl' | 'jsd', params: Record<string, number>): LossOf {
  const d = DistillSchema.parse({ method: name, params });
  if (d.method === 'scratch') throw new Error('not a method');
  const loss = distillLoss(d);
  return (o, s, x) => {
    const b = topKBuckets(
      o,
      s,
      { p: x['p']!, kept: x['kept']!, tail: x['tail']!, entropy: x['entropy']!, logBuckets: x['logBuckets']! },
      params['temperature']!,
    );
    return { loss: loss(o, { student: b.student, teacher: b.teacher, target: x['target']!, classes: C + 1, rows: rowsOf(x) }) };
  };
}
const dense = { teacher, target, ...rows };

/** The golden counts as a sampled cache stores them (distinct ids, counts, log-probabilities at T = 2), through sampledTargets. */
function sampledFeeds(): Record<string, Feed> {
  const unique: number[] = [];
  const indices: number[] = [];
  const counts: number[] = [];
  const logprobs: number[] = [];
  golden.sampled.counts.forEach((row, n) => {
    const z = golden.teacher[n]!.map((v) => v / 2);
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    let k = 0;
    row.forEach((c, i) => {
      if (c === 0) return;
      indices.push(i);
      counts.push(c);
      logprobs.push(z[i]! - lse);
      k++;
    });
    unique.push(k);
  });
  const S = golden.sampled.n;
  const ids = new Float32Array(N * S);
  const weights = new Float32Array(N * S);
  const entropy = new Float32Array(N);
  sampledTargets({ unique, indices, counts, logprobs }, 0, N, S, { ids, weights, entropy, rowOffset: 0 });
  return { ids: { data: ids, dims: [N, S] }, w: { data: weights, dims: [N, S] }, h: { data: entropy, dims: [N, 1] } };
}
const cases: Case[] = [
  { name: 'kd (T = 4)', loss: method('kd', { temperature: 4 }), inputs: dense, value: golden.kd_T4, grad: golden.grad.kd_T4 },
  { name: 'dkd', loss: method('dkd', { alpha: 1, beta: 8, temperature: 4 }), inputs: dense, value: golden.dkd, grad: golden.grad.dkd },
  { name: 'nkd', loss: method('nkd', { temperature: 4, gamma: 1.5 }), inputs: dense, value: golden.nkd, grad: golden.grad.nkd },
  { name: 'dist', loss: method('dist', { beta: 1, gamma: 2, temperature: 4 }), inputs: dense, value: golden.dist, grad: golden.grad.dist },
  { name: 'lskd', loss: method('lskd', { temperature: 2 }), inputs: dense, value: golden.lskd, grad: golden.grad.lskd },
  {
    name: 'rkl from a top-3 cache (the k + 1 buckets)',
    loss: bucketed('rkl', { temperature: 4 }),
    inputs: { ...topKFeeds(3, 4), target, ...rows },
    value: golden.topk3_rkl,
    grad: golden.grad.topk3_rkl,
  },
  {
    name: 'jsd (β = 0.3) from a top-3 cache',
    loss: bucketed('jsd', { beta: 0.3, temperature: 4 }),
    inputs: { ...topKFeeds(3, 4), target, ...rows },
    value: golden.topk3_jsd,
    grad: golden.grad.topk3_jsd,
  },
  { name: 'rkl (reverse KL)', loss: method('rkl', { temperature: 2 }), inputs: dense, value: golden.rkl, grad: golden.grad.rkl },
  { name: 'jsd (β = 0.3)', loss: method('jsd', { beta: 0.3, temperature: 2 }), inputs: dense, value: golden.jsd, grad: golden.grad.jsd },
  { name: 'tvd', loss: method('tvd', { temperature: 2 }), inputs: dense, value: golden.tvd, grad: golden.grad.tvd },
  {
    name: 'cross-entropy',
    loss: (o, s, x) => ({ loss: crossEntropy(o, s, x['target']!, rowsOf(x)) }),
    inputs: { target, ...rows },
    value: golden.ce,
    grad: golden.grad.ce,
  },
  {
    name: 'cross-entropy from class indices (crossEntropyAt)',
    loss: (o, s, x) => ({ loss: crossEntropyAt(o, s, x['labels']!, rowsOf(x)) }),
    inputs: { labels: { data: Float32Array.from(golden.labels), dims: [N, 1] }, ...rows },
    value: golden.ce,
    grad: golden.grad.ce,
  },
  {
    name: 'top-k KD (k = 3 of 7)',
    loss: (o, s, x) => ({ loss: topKKd(o, s, { p: x['p']!, kept: x['kept']!, tail: x['tail']!, entropy: x['entropy']! }, rowsOf(x), 4) }),
    inputs: { ...topKFeeds(3, 4), ...rows },
    value: golden.topk3,
    grad: golden.grad.topk3,
  },
  {
    name: 'sampled KD (12 draws per row at T = 2, the unbiased estimator)',
    loss: (o, s, x) => ({ loss: sampledKd(o, s, { ids: x['ids']!, weights: x['w']!, entropy: x['h']! }, rowsOf(x), 2) }),
    inputs: { ...sampledFeeds(), ...rows },
    value: golden.sampled.value,
    grad: golden.grad.sampled,
  },
  {
    name: 'subset KD (two teachers over disjoint classes)',
    loss: (o, s, x) => ({
      loss: subsetKd(
        o,
        s,
        C,
        [
          { logits: x['a']!, classIndex: golden.multi.a_idx },
          { logits: x['b']!, classIndex: golden.multi.b_idx },
        ],
        rowsOf(x),
        4,
      ),
    }),
    inputs: { a: matrix(golden.multi.a), b: matrix(golden.multi.b), ...rows },
    value: golden.multi.value,
    grad: golden.grad.multi,
  },
];

// float32 arithmetic against float64 references.
const close = (got: number, want: number, what: string) => expect(Math.abs(got - want), what).toBeLessThan(2e-5 * Math.max(1, Math.abs(want)));

describe('each loss, on each backend, matches float64 references (value and dL/dstudent)', () => {
  for (const backend of BACKENDS) {
    for (const c of cases) {
      it(`${c.name} on ${backend}`, async () => {
        const got = await evaluate(backend, c.loss, student, c.inputs);
        close(got.terms['loss']!, c.value, 'value');
        const want = c.grad.flat();
        const scale = Math.max(1, ...want.map(Math.abs));
        let worst = 0;
        want.forEach((v, i) => (worst = Math.max(worst, Math.abs(got.grad[i]! - v))));
        expect(worst / scale, 'max |Δ dL/ds|').toBeLessThan(5e-5);
        expect(want.some((v) => Math.abs(v) > 1e-3)).toBe(true);
      });
    }
  }
  it('covers every registered method', () => {
    const tested = new Set(cases.map((c) => c.name.split(' ')[0]));
    expect(Object.keys(distillMethods).filter((m) => !tested.has(m))).toEqual([]);
  });
  it('top-k with every class kept is exactly KD', async () => {
    const loss: LossOf = (o, s, x) => ({ loss: topKKd(o, s, { p: x['p']!, kept: x['kept']!, tail: x['tail']!, entropy: x['entropy']! }, rowsOf(x), 4) });
    for (const backend of BACKENDS) {
      const got = await evaluate(backend, loss, student, { ...topKFeeds(7, 4), ...rows });
      close(got.terms['loss']!, golden.topk7, `${backend} top-7`);
      close(got.terms['loss']!, golden.kd_T4, `${backend} top-7 vs kd`);
    }
  });
});

describe('hint losses: golden values and gradients on both backends', () => {
  const h = golden.hints;
  const nd = (v: unknown, dims: number[]): Feed => ({ data: Float32Array.from((v as number[]).flat(4) as number[]), dims });
  const sMap = nd(h.s_map, [N, 3, 4, 4]);
  const sVec = nd(h.s_vec, [N, 6]);
  const hint = (name: HintName, params: Record<string, unknown> = {}): LossOf => {
    const def = hintLosses[name] as HintLoss<unknown>;
    const p = def.params.parse(params);
    return (o, s, x) => ({ loss: def.loss(o, { student: s, teacher: x['t']!, rows: rowsOf(x) }, p) });
  };
  const hintCases: Array<[string, LossOf, Feed, Feed, number, unknown]> = [
    ['at (student 3 channels, teacher 2)', hint('at'), sMap, nd(h.t_map, [N, 2, 4, 4]), h.at, h.grad.at],
    ['fitnets', hint('fitnets'), sMap, nd(h.fit_t, [N, 3, 4, 4]), h.fitnets, h.grad.fitnets],
    ['embed, mse', hint('embed'), sVec, nd(h.t_vec, [N, 6]), h.embed_mse, h.grad.embed_mse],
    ['embed, cosine', hint('embed', { distance: 'cosine' }), sVec, nd(h.t_vec, [N, 6]), h.embed_cosine, h.grad.embed_cosine],
  ];
  for (const backend of BACKENDS) {
    for (const [name, loss, s, t, value, grad] of hintCases) {
      it(`${backend}: ${name}`, async () => {
        const got = await evaluate(backend, loss, s, { t, ...rows });
        close(got.terms['loss']!, value, `${backend} ${name}`);
        const want = (grad as number[]).flat(4) as number[];
        const scale = Math.max(...want.map(Math.abs));
        let worst = 0;
        want.forEach((v, i) => (worst = Math.max(worst, Math.abs(got.grad[i]! - v))));
        expect(worst / scale, 'max |Δ dL/ds| over the largest').toBeLessThan(1e-3);
        expect(scale).toBeGreaterThan(1e-4);
      });
    }
  }
  it('covers every registered hint loss', () => {
    const tested = new Set(hintCases.map(([n]) => n.split(/[ ,]/)[0]));
    expect(Object.keys(hintLosses).filter((m) => !tested.has(m))).toEqual([]);
  });
});

describe('loss behaviour', () => {
  const zeroWhenEqual: Array<[MethodName, Record<string, number>, number]> = [
    ['kd', { temperature: 3 }, 1e-5],
    ['lskd', { temperature: 3 }, 1e-5],
    ['dkd', { alpha: 1, beta: 8, temperature: 3 }, 1e-4],
    ['dist', { beta: 1, gamma: 1, temperature: 3 }, 1e-4],
    ['rkl', { temperature: 2 }, 1e-5],
    ['jsd', { beta: 0.5, temperature: 2 }, 1e-5],
    ['tvd', { temperature: 2 }, 1e-6],
  ];
  for (const [name, params, tol] of zeroWhenEqual) {
    it(`${name} is zero when the student equals the teacher, and positive otherwise`, async () => {
      const same = await evaluate('onnx', method(name, params), teacher, { ...dense });
      expect(Math.abs(same.terms['loss']!)).toBeLessThan(tol);
      const other = await evaluate('onnx', method(name, params), student, { ...dense });
      expect(other.terms['loss']!).toBeGreaterThan(10 * tol);
    });
  }
  it('gradients are finite for extreme logits (DKD masks, JSD mixture where both probabilities underflow)', async () => {
    const big: Feed = { data: Float32Array.of(500, -500, 0, 1, 2, 3, 4), dims: [1, 7] };
    const zeros: Feed = { data: new Float32Array(7), dims: [1, 7] };
    const y: Feed = { data: Float32Array.of(1, 0, 0, 0, 0, 0, 0), dims: [1, 7] };
    const one = { rows: { data: Float32Array.of(1), dims: [1, 1] }, norm: { data: Float32Array.of(1), dims: [1] } };
    for (const backend of BACKENDS) {
      for (const [name, params] of [
        ['dkd', { alpha: 1, beta: 8, temperature: 1 }],
        ['jsd', { beta: 0.5, temperature: 1 }],
      ] as const) {
        const got = await evaluate(backend, method(name, params), zeros, { teacher: big, target: y, ...one });
        expect(Array.from(got.grad).every(Number.isFinite), `${name} on ${backend}`).toBe(true);
        expect(Number.isFinite(got.terms['loss']!)).toBe(true);
      }
    }
  });
  it('the eager functions reject mismatched shapes with a clear error, and refuse unknown params', () => {
    expect(() => kdLoss(tf.zeros([2, 3]) as tf.Tensor2D, tf.zeros([2, 4]) as tf.Tensor2D, { temperature: 1 })).toThrow(/must both be \[N, C\]/);
    expect(() => dkdLoss(tf.zeros([2, 3]) as tf.Tensor2D, tf.zeros([2, 3]) as tf.Tensor2D, tf.tensor1d([0, 1], 'int32'), { temperature: 1, gama: 2 })).toThrow(
      /gama/,
    );
  });
  it('jsd refuses β outside (0, 1)', () => {
    expect(DistillSchema.safeParse({ method: 'jsd', params: { beta: 1 } }).success).toBe(false);
    expect(DistillSchema.parse({ method: 'jsd' })).toEqual({ method: 'jsd', params: { beta: 0.5, temperature: 1 } });
  });
});
