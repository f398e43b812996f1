/**
 * listTensors on generated graphs: shapes per sample come from running the model, and values
 * that do not follow the batch (shape arithmetic, int64) are not listed.
 */
import { describe, expect, it } from 'vitest';
import { Graph } from './graph.js';
import { OrtSession } from './ort-session.js';
import { listTensors, withOutputs } from './tensors.js';

/** x [N, 6] → Reshape to [N, 2, 3] (the target shape computed from Shape(x)) → ReduceSum over the last axis → [N, 2]. */
function graph(): Uint8Array {
  const g = new Graph('t');
  g.input('x', ['N', 6]);
  const n = g.node('Slice', [g.node('Shape', ['x'], {}, 'shape_of_x'), g.int64('s0', [0]), g.int64('s1', [1])], {}, 'batch_dim');
  const target = g.node('Concat', [n, g.int64('rest', [2, 3])], { axis: 0 }, 'target_shape');
  const r = g.node('Reshape', ['x', target], {}, 'grid');
  g.node('ReduceSum', [r, g.int64('ax', [2])], { keepdims: 0 }, 'sums');
  g.output('sums', ['N', 2]);
  return g.toBytes();
}

describe('listTensors', () => {
  it('gives every per-sample tensor its shape per sample, in node order, and leaves out the shape arithmetic', async () => {
    const tensors = await listTensors(graph(), [6]);
    expect(tensors).toEqual([
      { name: 'grid', op: 'Reshape', dtype: 'float32', shape: [2, 3], elements: 6, output: false },
      { name: 'sums', op: 'ReduceSum', dtype: 'float32', shape: [2], elements: 2, output: true },
    ]);
  });

  it('withOutputs exposes an intermediate tensor of a copy of the model, whose values are the ones the model computes', async () => {
    const s = await OrtSession.create(withOutputs(graph(), ['grid']), { provider: 'cpu' });
    try {
      const x = Float32Array.from({ length: 12 }, (_, i) => i);
      const out = await s.runMany({ x: { data: x, dims: [2, 6] } }, ['grid', 'sums']);
      expect([...out['grid']!]).toEqual([...x]);
      expect([...out['sums']!]).toEqual([3, 12, 21, 30]);
    } finally {
      await s.release();
    }
  });
});
