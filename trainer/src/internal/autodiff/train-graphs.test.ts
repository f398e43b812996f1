/**
 * The silent failures the step builder refuses: a gradient rule that returns the wrong number of
 * input gradients, and a trainable parameter the loss does not depend on (it would never train).
 */
import { describe, expect, it } from 'vitest';
import { Graph } from '@distillate/shared/onnx';
import { differentiate } from './backward.js';
import { gradientRules, type GradRule } from './rules.js';
import { inferShapes, type Shape } from './shapes.js';
import { buildStepGraph, type LossPiece } from './train-graphs.js';

const loss: LossPiece = {
  inputs: {},
  outputs: ['logits'],
  compute: (o, out) => {
    const total = o.sumAll(o.logSoftmax(out['logits']!));
    return { total, terms: { total } };
  },
};

const optimizer = { kind: 'sgd', momentum: 0, weightDecay: 0 } as const;
const inputs = [{ name: 'x', dims: [-1, 3], type: 'float32' }] as const;

function student(withUnused: boolean): Graph {
  const g = new Graph('s');
  g.input('x', ['N', 3]);
  g.node('MatMul', ['x', g.initializer('W', Float32Array.of(1, 2, 3, 4, 5, 6), [3, 2])], {}, 'logits');
  if (withUnused) g.node('MatMul', ['x', g.initializer('V', Float32Array.of(1, 1, 1), [3, 1])], {}, 'side');
  g.initializer('never_read', Float32Array.of(1, 2), [2]);
  g.output('logits', ['N', 2]);
  return g;
}

describe('step graph refusals', () => {
  it('a parameter with no gradient path to the loss is an error naming it', () => {
    expect(() => buildStepGraph(student(false), { inputs, outputs: { logits: 'logits' }, optimizer, loss })).not.toThrow(); // an initializer no node reads is not a parameter
    expect(() => buildStepGraph(student(true), { inputs, outputs: { logits: 'logits' }, optimizer, loss })).toThrow(
      /parameter V has no gradient path to the loss/,
    );
  });

  it("a rule whose gradient count is not its op's input count is refused", () => {
    const g = new Graph('r');
    g.input('x', ['N', 3]);
    const y = g.node('Relu', ['x']);
    const total = g.node('ReduceSum', [y], { keepdims: 0 });
    const shapes = inferShapes(g, new Map<string, Shape>([['x', [-1, 3]]]));
    const wrong: GradRule = (_ctx, _n, [dy]) => [dy, undefined];
    const spec = { forward: g, shapes, wrt: ['x'], output: total, outputGrad: g.constant('seed', [1], []), into: g };
    expect(() => differentiate({ ...spec, rules: { ...gradientRules, Relu: wrong } })).toThrow(
      /the Relu gradient rule gave 2 input gradients for node .*, which has 1 inputs/,
    );
    expect(differentiate(spec).get('x')).toBeDefined();
  });
});

describe('step graph pruning', () => {
  it('runs no node whose outputs nothing reads: the gradient a rule gives the input images is dropped', () => {
    const s = new Graph('conv');
    s.input('x', ['N', 1, 6, 6]);
    const w = s.initializer('W', new Float32Array(2 * 9).fill(0.1), [2, 1, 3, 3]);
    const y = s.node('Conv', ['x', w], { pads: [1, 1, 1, 1] });
    s.node('Flatten', [s.node('Relu', [y])], {}, 'logits');
    s.output('logits', ['N', 72]);
    const { graph } = buildStepGraph(s, { inputs: [{ name: 'x', dims: [-1, 1, 6, 6], type: 'float32' }], outputs: { logits: 'logits' }, optimizer, loss });
    const read = new Set(graph.outputs.map((o) => o.name));
    for (const n of graph.nodes) for (const i of n.inputs) read.add(i);
    expect(graph.nodes.filter((n) => !n.outputs.some((o) => read.has(o))).map((n) => n.op)).toEqual([]);
    // The Conv's input gradient (a ConvTranspose into x's shape) was built by the rule and dropped.
    expect(graph.nodes.some((n) => n.op === 'ConvTranspose')).toBe(false);
    expect([...graph.initializers.keys()].filter((k) => !read.has(k))).toEqual([]);
  });
});
