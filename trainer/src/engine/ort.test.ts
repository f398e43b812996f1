/**
 * The ORT engine's optimizers against TF.js's own (tf.train.adam, tf.train.momentum, plus the
 * decoupled weight decay the TF.js engine applies): the same gradients for 3 steps, at three
 * learning rates, must give the same weights. The student is logits = x·W with x = I, so dL/dW is the dL/dlogits we choose.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { Graph } from '@distillate/shared/onnx';
import { selectBackend } from '../backend.js';
import { parseRecipe } from '../recipe.js';
import { flatBatch, type BatchLoss } from './engine.js';
import { OrtEngine } from './ort.js';
import { setLearningRate } from './tfjs.js';

const D = 6;
const C = 4;
let model: string;
const w0 = Float32Array.from({ length: D * C }, (_, i) => Math.sin(i + 1));

beforeAll(async () => {
  await selectBackend('cpu');
  const g = new Graph('linear');
  g.input('x', ['N', D]);
  g.node('MatMul', ['x', g.initializer('W', w0, [D, C])], {}, 'y');
  g.output('y', ['N', C]);
  model = join(await mkdtemp(join(tmpdir(), 'distillate-opt-')), 'linear.onnx');
  await writeFile(model, g.toBytes());
});

/** L = Σ z·G, so dL/dz = G. */
function linearLoss(G: Float32Array): BatchLoss {
  return {
    key: 'linear',
    inputs: { G: ['N', C] },
    outputs: ['logits'],
    feeds: () => ({ G: { data: G, dims: [G.length / C, C] } }),
    compute(o, outputs, inputs) {
      const total = o.sumAll(o.mul(outputs['logits']!, inputs['G']!));
      return { total, terms: { total } };
    },
  };
}

const cases = [
  { name: 'adam', optimizer: { kind: 'adam', lr: 0.01 }, tfjs: (lr: number) => tf.train.adam(lr), decay: 0 },
  { name: 'adamw (decoupled weight decay 0.1)', optimizer: { kind: 'adamw', lr: 0.01, weightDecay: 0.1 }, tfjs: (lr: number) => tf.train.adam(lr), decay: 0.1 },
  {
    name: 'sgd with momentum 0.9 and weight decay 0.05',
    optimizer: { kind: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 0.05 },
    tfjs: (lr: number) => tf.train.momentum(lr, 0.9),
    decay: 0.05,
  },
] as const;

describe('ORT engine optimizers match TF.js', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const recipe = parseRecipe({ name: 'o', data: { train: 'x' }, student: { kind: 'onnx', path: model }, optimizer: c.optimizer });
      const engine = await OrtEngine.create(recipe, [D], C, { provider: 'cpu' });
      const rand = mulberry32(3);
      const grads = [0, 1, 2].map(() => Float32Array.from({ length: D * C }, () => rand() * 2 - 1));
      const lrs = [c.optimizer.lr, c.optimizer.lr * 0.5, c.optimizer.lr * 0.25]; // the schedule changes lr per step
      const eye = Float32Array.from({ length: D * D }, (_, i) => (i % (D + 1) === 0 ? 1 : 0));
      const W = tf.variable(tf.tensor2d(w0, [D, C]));
      const opt = c.tfjs(lrs[0]!);
      try {
        for (let s = 0; s < 3; s++) {
          const G = tf.tensor2d(grads[s]!, [D, C]);
          await engine.step(flatBatch(engine, eye, D), linearLoss(grads[s]!), lrs[s]!);
          setLearningRate(opt, lrs[s]!);
          opt.applyGradients([{ name: W.name, tensor: G }]);
          if (c.decay > 0) W.assign(tf.mul(W, 1 - lrs[s]! * c.decay));
          G.dispose();
        }
        const got = Graph.fromBytes(engine.exportOnnx({})).initializers.get('W')!.data as Float32Array;
        const want = W.dataSync();
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        expect(Math.abs(got[0]! - w0[0]!)).toBeGreaterThan(1e-3); // it moved
        expect(worst).toBeLessThan(2e-6);
      } finally {
        W.dispose();
        opt.dispose();
        await engine.release();
      }
    });
  }
});

describe('TF.js engine learning-rate schedule', () => {
  it('reaches tf.train.momentum: a step at lr 0 leaves the weights alone', async () => {
    const { TfjsEngine } = await import('./tfjs.js');
    const recipe = parseRecipe({ name: 'o', data: { train: 'x' }, student: { kind: 'mlp', hidden: [] }, optimizer: { kind: 'sgd', lr: 0.1, momentum: 0.9 } });
    const engine = await TfjsEngine.create(recipe, [D], C, 'cpu');
    const x = Float32Array.from({ length: 2 * D }, (_, i) => i / 7);
    const loss = linearLoss(Float32Array.from({ length: 2 * C }, (_, i) => i - 3));
    try {
      await engine.step(flatBatch(engine, x, 2), loss, 0.1);
      const before = engine.model.getWeights().map((w) => w.dataSync().slice());
      await engine.step(flatBatch(engine, x, 2), loss, 0);
      const after = engine.model.getWeights().map((w) => w.dataSync());
      before.forEach((w, k) => expect(Array.from(after[k]!)).toEqual(Array.from(w)));
    } finally {
      await engine.release();
    }
  });
});

describe('ORT engine stored inputs', () => {
  it('trains and predicts on stored uint8 values (scaled in the graph) as on the scaled floats, and exports the float student', async () => {
    const stored = { scale: 1 / 255, offset: -0.5 };
    const recipe = parseRecipe({ name: 's', data: { train: 'x' }, student: { kind: 'mlp', hidden: [5] }, optimizer: { kind: 'adam', lr: 0.05 } });
    const bytes = Uint8Array.from({ length: 8 * D }, (_, i) => (i * 37) % 256);
    const floats = Float32Array.from(bytes, (v) => v * stored.scale + stored.offset);
    const G = Float32Array.from({ length: 8 * C }, (_, i) => Math.cos(i));
    const plain = await OrtEngine.create(recipe, [D], C, { provider: 'cpu' });
    const scaling = await OrtEngine.create(recipe, [D], C, { provider: 'cpu', storedInput: stored });
    try {
      expect(plain.storedInput).toBeUndefined();
      expect(scaling.storedInput).toEqual(stored);
      for (let s = 0; s < 3; s++) {
        const [a] = await plain.steps([{ batch: flatBatch(plain, floats, 8), loss: linearLoss(G) }], 0.05);
        const [b] = await scaling.steps([{ batch: flatBatch(scaling, bytes, 8), loss: linearLoss(G) }], 0.05);
        expect(b!.terms['total']).toBeCloseTo(a!.terms['total']!, 4);
      }
      const want = await plain.predict(flatBatch(plain, floats, 8));
      const fromBytes = await scaling.predict(flatBatch(scaling, bytes, 8));
      const fromFloats = await scaling.predict(flatBatch(scaling, floats, 8)); // floats still go through the student as it is
      for (let i = 0; i < want.length; i++) {
        expect(fromBytes[i]!).toBeCloseTo(want[i]!, 4);
        expect(fromFloats[i]!).toBeCloseTo(want[i]!, 4);
      }
      // student.onnx keeps the student's own float input.
      expect(Graph.fromBytes(scaling.exportOnnx({})).inputs.map((v) => v.type)).toEqual(['float32']);
      // Without the offer, stored bytes are refused, not read as floats.
      await expect(plain.predict(flatBatch(plain, bytes, 8))).rejects.toThrow(/takes float32, the batch holds uint8/);
    } finally {
      await plain.release();
      await scaling.release();
    }
  });
});
