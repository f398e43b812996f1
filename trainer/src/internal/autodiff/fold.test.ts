/**
 * Constant folding of exported shape arithmetic (fold.ts) on generated graphs: a Reshape target
 * built from Shape(x) keeps the batch as 0 (copy) or −1, the folded graph computes what the
 * original does in onnxruntime, float constants it makes are frozen, and a value that needs the
 * batch size elsewhere is refused with its node named.
 */
import { describe, expect, it } from 'vitest';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { foldConstants } from './fold.js';
import { FROZEN_METADATA } from './train-graphs.js';

/** x [N, 4, 6] → Reshape(x, f(Shape(x))) → Softmax → y. */
function exported(target: (g: Graph, batch: string) => string): Graph {
  const g = new Graph('exported', 17);
  g.input('x', ['N', 4, 6]);
  const batch = g.node('Gather', [g.node('Shape', ['x']), g.initializer('zero', BigInt64Array.of(0n), [])], { axis: 0 });
  g.node('Softmax', [g.node('Reshape', ['x', target(g, batch)])], { axis: -1 }, 'y');
  g.output('y', ['N', 4, 2, 3]);
  return g;
}

async function run(g: Graph, x: Float32Array, dims: number[]): Promise<Float32Array> {
  const s = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
  try {
    return (await s.runMany({ x: { data: x, dims } }, ['y']))['y']!;
  } finally {
    await s.release();
  }
}

const x = Float32Array.from({ length: 3 * 24 }, (_, i) => Math.sin(i));

describe('folding exported shape arithmetic', () => {
  it('[batch, 4, 2, 3] from Shape → Gather → Unsqueeze → Concat: the batch becomes 0, the result unchanged', async () => {
    const g = exported((g, batch) => g.node('Concat', [g.node('Unsqueeze', [batch, g.int64('axes', [0])]), g.int64('rest', [4, 2, 3])], { axis: 0 }));
    const folded = foldConstants(g, new Map([['x', [-1, 4, 6]]]));
    expect(folded.nodes.map((n) => n.op)).toEqual(['Reshape', 'Softmax']);
    const target = folded.initializers.get(folded.nodes[0]!.inputs[1]!)!;
    expect(Array.from(target.data as BigInt64Array, Number)).toEqual([0, 4, 2, 3]);
    expect(await run(folded, x, [3, 4, 6])).toEqual(await run(g, x, [3, 4, 6]));
  });

  it('a target that multiplies the batch ([batch × 4, 6]) becomes −1', async () => {
    const g = new Graph('flat', 17);
    g.input('x', ['N', 4, 6]);
    const batch = g.node('Gather', [g.node('Shape', ['x']), g.initializer('zero', BigInt64Array.of(0n), [])], { axis: 0 });
    const rows = g.node('Mul', [batch, g.initializer('four', BigInt64Array.of(4n), [])]);
    const target = g.node('Concat', [g.node('Unsqueeze', [rows, g.int64('axes', [0])]), g.int64('six', [6])], { axis: 0 });
    g.node('Softmax', [g.node('Reshape', ['x', target])], { axis: -1 }, 'y');
    g.output('y', ['M', 6]);
    const folded = foldConstants(g, new Map([['x', [-1, 4, 6]]]));
    expect(Array.from(folded.initializers.get(folded.nodes[0]!.inputs[1]!)!.data as BigInt64Array, Number)).toEqual([-1, 6]);
    expect(await run(folded, x, [3, 4, 6])).toEqual(await run(g, x, [3, 4, 6]));
  });

  it('float constants it makes are frozen (not parameters); a value that needs the batch size elsewhere is refused', () => {
    const g = new Graph('scaled', 17);
    g.input('x', ['N', 4]);
    // 1 / √4 from Shape(x)[1]: a float constant made by folding.
    const width = g.node('Cast', [g.node('Gather', [g.node('Shape', ['x']), g.initializer('one', BigInt64Array.of(1n), [1])], { axis: 0 })], { to: 1 });
    g.node('Mul', ['x', g.node('Div', [g.initializer('unit', Float32Array.of(1), []), g.node('Sqrt', [width])])], {}, 'y');
    g.output('y', ['N', 4]);
    const folded = foldConstants(g, new Map([['x', [-1, 4]]]));
    expect(folded.nodes.map((n) => n.op)).toEqual(['Mul']);
    const scale = folded.nodes[0]!.inputs[1]!;
    expect(Array.from(folded.initializers.get(scale)!.data as Float32Array)).toEqual([0.5]);
    expect(folded.metadata.get(FROZEN_METADATA)?.split(',')).toContain(scale);

    const bad = new Graph('positions', 17);
    bad.input('x', ['N', 4]);
    const n = bad.node('Gather', [bad.node('Shape', ['x']), bad.initializer('zero', BigInt64Array.of(0n), [])], { axis: 0 });
    const range = bad.node('Range', [bad.initializer('start', BigInt64Array.of(0n), []), n, bad.initializer('step', BigInt64Array.of(1n), [])]);
    bad.node('Add', ['x', bad.node('Cast', [bad.node('Unsqueeze', [range, bad.int64('axes', [1])])], { to: 1 })], {}, 'y');
    bad.output('y', ['N', 4]);
    expect(() => foldConstants(bad, new Map([['x', [-1, 4]]]))).toThrow(/Range node .*: needs a value that depends on the batch size/);
  });
});
