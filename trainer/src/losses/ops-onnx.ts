/**
 * The losses' ops as ONNX nodes appended to a graph: a tensor is a value name. The ORT engine
 * puts the loss in its train-step graph this way and differentiates it by the gradient rules, so
 * every op used here must have one (internal/autodiff/rules.ts).
 */
import type { Graph } from '@distillate/shared/onnx';
import type { Ops } from './ops.js';

export function onnxOps(g: Graph): Ops<string> {
  const scalars = new Map<number, string>();
  const scalar = (v: number): string => {
    let name = scalars.get(v);
    if (name === undefined) scalars.set(v, (name = g.constant('c', [v], [])));
    return name;
  };
  const axes = (axis: number): string => g.int64('axes', [axis]);
  return {
    scalar,
    matrix: (values, dims) => g.constant('m', values, [dims[0], dims[1]]),
    add: (a, b) => g.node('Add', [a, b]),
    sub: (a, b) => g.node('Sub', [a, b]),
    mul: (a, b) => g.node('Mul', [a, b]),
    div: (a, b) => g.node('Div', [a, b]),
    maximum: (a, b) => g.node('Max', [a, b]),
    neg: (x) => g.node('Neg', [x]),
    exp: (x) => g.node('Exp', [x]),
    log: (x) => g.node('Log', [x]),
    sqrt: (x) => g.node('Sqrt', [x]),
    abs: (x) => g.node('Abs', [x]),
    logSoftmax: (x) => g.node('LogSoftmax', [x], { axis: -1 }),
    softmax: (x) => g.node('Softmax', [x], { axis: -1 }),
    // ReduceSum takes its axes as an input from opset 13; ReduceMean and ReduceLogSumExp as an attribute until 18.
    sum: (x, axis) => g.node('ReduceSum', [x, axes(axis)], { keepdims: 1 }),
    mean: (x, axis) => g.node('ReduceMean', [x], { axes: [axis], keepdims: 1 }),
    logSumExp: (x, axis) => g.node('ReduceLogSumExp', [x], { axes: [axis], keepdims: 1 }),
    sumAll: (x) => g.node('ReduceSum', [x], { keepdims: 0 }),
    meanAll: (x) => g.node('ReduceMean', [x], { keepdims: 0 }),
    concat: (xs, axis) => g.node('Concat', [...xs], { axis }),
    flatten: (x) => g.node('Flatten', [x], { axis: 1 }),
    gatherLast: (x, indices) => g.node('GatherElements', [x, g.node('Cast', [indices], { to: 7 })], { axis: -1 }),
    oneHot: (indices, depth) => g.node('OneHot', [indices, g.constant('depth', [depth], []), g.constant('onehot_values', [0, 1], [2])], { axis: -1 }),
    matMul: (a, b) => g.node('MatMul', [a, b]),
  };
}
