/**
 * The engine seam beyond "a float vector in, class logits out": a student with an int32 input
 * (0/1 per position, as a padding mask beside token ids) and a float [N, L, D] input, giving
 * `logits` [N, L, V] and an intermediate `hint` [N, L, H]. A loss reads both by name; the ORT
 * engine trains it, predicts, and exports it with its own inputs and outputs; the TF.js engine
 * refuses it in one line.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { studentSidecar } from '../export-check.js';
import { parseRecipe } from '../recipe.js';
import { LOGITS, type BatchLoss, type StudentBatch } from './engine.js';
import { OrtEngine } from './ort.js';

const [N, L, D, H, V] = [6, 5, 4, 8, 7];
const rand = mulberry32(5);
const randn = (n: number, s: number): Float32Array => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * s);

function sequenceStudent(): Graph {
  const g = new Graph('seq', 13);
  g.input('keep', ['N', L], 'int32');
  g.input('x', ['N', L, D]);
  const mask = g.node('Reshape', [g.node('Cast', ['keep'], { to: 1 }), g.int64('shape', [-1, L, 1])]);
  const flat = g.node('Reshape', [g.node('Mul', ['x', mask]), g.int64('shape', [-1, D])]);
  const h = g.node('Relu', [g.node('MatMul', [flat, g.initializer('W1', randn(D * H, 0.5), [D, H])])]);
  g.node('Reshape', [h, g.int64('shape', [-1, L, H])], {}, 'hint');
  g.node('Reshape', [g.node('MatMul', [h, g.initializer('W2', randn(H * V, 0.5), [H, V])]), g.int64('shape', [-1, L, V])], {}, LOGITS);
  g.output(LOGITS, ['N', L, V]);
  g.output('hint', ['N', L, H]);
  return g;
}

const keep = Int32Array.from({ length: N * L }, (_, i) => (i % L === L - 1 ? 0 : 1)); // the last position is padding
const batch: StudentBatch = { rows: N, inputs: { keep: { data: keep, dims: [N, L] }, x: { data: randn(N * L * D, 1), dims: [N, L, D] } } };
const target = new Float32Array(N * L * V);
for (let i = 0; i < N * L; i++) target[i * V + (i % V)] = 1;

/** Per-position cross-entropy on the logits plus MSE of the hint to a fixed target, both means over N·L. */
const loss: BatchLoss = {
  key: 'seq',
  inputs: { target: ['N', L, V], hint_target: ['N', L, H], norm: [1] },
  outputs: [LOGITS, 'hint'],
  feeds: () => ({
    target: { data: target, dims: [N, L, V] },
    hint_target: { data: new Float32Array(N * L * H).fill(0.25), dims: [N, L, H] },
    norm: { data: Float32Array.of(1 / (N * L)), dims: [1] },
  }),
  compute(o, out, x) {
    const norm = o.sumAll(x['norm']!);
    const ce = o.mul(o.sumAll(o.neg(o.mul(x['target']!, o.logSoftmax(out[LOGITS]!)))), norm);
    const d = o.sub(out['hint']!, x['hint_target']!);
    const mse = o.mul(o.sumAll(o.mul(d, d)), norm);
    const total = o.add(ce, mse);
    return { total, terms: { ce, mse, total } };
  },
};

const recipe = parseRecipe({ name: 'seq', data: { train: 'unused' }, student: { kind: 'mlp' }, optimizer: { kind: 'adam', lr: 0.03 }, seed: 3 });

describe('the engine seam: named tensors of any rank and dtype', () => {
  it('the ORT engine trains a [N, L] int32 + [N, L, D] float → logits [N, L, V] + hint [N, L, H] student, with a loss reading both outputs', async () => {
    const engine = await OrtEngine.fromGraph(sequenceStudent(), recipe, { provider: 'cpu' });
    try {
      expect(engine.inputs).toEqual([
        { name: 'keep', dtype: 'int32', dims: ['N', L] },
        { name: 'x', dtype: 'float32', dims: ['N', L, D] },
      ]);
      expect(engine.outputs.map((o) => [o.name, o.dims])).toEqual([
        [LOGITS, ['N', L, V]],
        ['hint', ['N', L, H]],
      ]);
      expect(engine.classes).toBe(V);
      const first = await engine.step(batch, loss, 0.03);
      expect(first.outputs[LOGITS]).toHaveLength(N * L * V);
      expect(first.outputs['hint']).toHaveLength(N * L * H);
      let last = first;
      for (let i = 0; i < 150; i++) last = await engine.step(batch, loss, 0.05);
      expect(last.terms['ce']!).toBeLessThan(0.75 * first.terms['ce']!);
      expect(last.terms['mse']!).toBeLessThan(0.85 * first.terms['mse']!); // the padding positions' hints cannot move: their input is zero

      // The exported model has the student's own inputs and outputs and gives predict()'s logits.
      const bytes = engine.exportOnnx({ 'distillate.note': 'seam' });
      const exported = Graph.fromBytes(bytes);
      expect(exported.inputs.map((i) => [i.name, i.type])).toEqual([
        ['keep', 'int32'],
        ['x', 'float32'],
      ]);
      expect(exported.outputs.map((o) => o.name)).toEqual([LOGITS, 'hint']);
      expect(exported.metadata.get('distillate.note')).toBe('seam');
      const want = await engine.predict(batch);
      const session = await OrtSession.create(bytes, { provider: 'cpu' });
      try {
        const got = (await session.runMany({ keep: batch.inputs['keep']!, x: { data: batch.inputs['x']!.data as Float32Array, dims: [N, L, D] } }, [LOGITS]))[
          LOGITS
        ]!;
        let worst = 0;
        want.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got[i]!))));
        expect(worst).toBeLessThan(1e-5);
      } finally {
        await session.release();
      }
      expect(studentSidecar(engine, []).tensors?.inputs.map((t) => t.name)).toEqual(['keep', 'x']);
    } finally {
      await engine.release();
    }
  });

  it('a batch without one of the inputs, or of the wrong dtype, is refused by name', async () => {
    const engine = await OrtEngine.fromGraph(sequenceStudent(), recipe, { provider: 'cpu' });
    try {
      await expect(engine.predict({ rows: N, inputs: { x: batch.inputs['x']! } })).rejects.toThrow(/the batch has no input keep/);
      await expect(engine.predict({ rows: N, inputs: { ...batch.inputs, keep: { data: Float32Array.from(keep), dims: [N, L] } } })).rejects.toThrow(
        /input keep: the student takes int32, the batch holds float32/,
      );
    } finally {
      await engine.release();
    }
  });

  it('the TF.js engine keeps classification: other inputs, and losses reading other outputs, are refused in one line', async () => {
    const { TfjsEngine } = await import('./tfjs.js');
    const { selectBackend } = await import('../backend.js');
    await selectBackend('cpu');
    const engine = await TfjsEngine.create(recipe, [D], V, 'cpu');
    try {
      await expect(engine.step(batch, loss, 0.01)).rejects.toThrow(
        /^the loss reads hint besides the logits; feature hints train on the ort engine only \(set engine: ort\)$/,
      );
      await expect(engine.predict(batch)).rejects.toThrow(
        /^the tfjs engine trains classifiers on one float32 input \[N, 4\]; this batch has keep .*: set engine: ort$/,
      );
    } finally {
      await engine.release();
    }
  });
});
