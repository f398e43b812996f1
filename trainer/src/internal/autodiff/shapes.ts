/**
 * Static shapes of a student graph, with the batch as −1. Gradient rules need them to undo
 * broadcasting, to reshape gradients back and to size transposed convolutions; they are known
 * once the sample shape is, because students take a fixed sample shape and a dynamic batch.
 */
import type { Graph, GraphNode } from '@distillate/shared/onnx';

export type Shape = readonly number[];

export class UnsupportedGraphError extends Error {
  override readonly name = 'UnsupportedGraphError';
}

export function ints(node: GraphNode, name: string, fallback: readonly number[]): number[] {
  const v = node.attrs[name];
  if (v === undefined) return [...fallback];
  if (!Array.isArray(v)) throw new UnsupportedGraphError(`${node.op} node ${node.name}: attribute ${name} should be a list of ints`);
  return [...(v as readonly number[])];
}

export function int(node: GraphNode, name: string, fallback: number): number {
  const v = node.attrs[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw new UnsupportedGraphError(`${node.op} node ${node.name}: attribute ${name} should be an int`);
  return v;
}

export function float(node: GraphNode, name: string, fallback: number): number {
  const v = node.attrs[name];
  if (v === undefined) return fallback;
  if (typeof v === 'object' && v !== null && 'float' in v) return v.float;
  if (typeof v === 'number') return v;
  throw new UnsupportedGraphError(`${node.op} node ${node.name}: attribute ${name} should be a float`);
}

/** numpy-style broadcast of two shapes. */
export function broadcast(a: Shape, b: Shape, where: string): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else if (x === -1 || y === -1)
      out.push(-1); // the dynamic batch against a fixed size: checked by ORT at run time
    else throw new UnsupportedGraphError(`${where}: shapes [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`);
  }
  return out;
}

/** Conv/pool geometry of one spatial axis: output size. */
export function spatialOut(size: number, kernel: number, stride: number, padBegin: number, padEnd: number): number {
  return Math.floor((size + padBegin + padEnd - kernel) / stride) + 1;
}

function int64Values(graph: Graph, name: string, where: string): number[] {
  const init = graph.initializers.get(name);
  if (init === undefined || !(init.data instanceof BigInt64Array)) throw new UnsupportedGraphError(`${where}: input ${name} must be a constant int64 tensor`);
  return Array.from(init.data, Number);
}

type ShapeRule = (node: GraphNode, inputs: Shape[], graph: Graph) => Shape;

function reduced(n: GraphNode, x: Shape, axes: number[], keepdims: number): number[] {
  const norm = axes.map((a) => (a < 0 ? a + x.length : a));
  const out: number[] = [];
  x.forEach((d, i) => {
    if (!norm.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  if (norm.some((a) => a < 0 || a >= x.length)) throw new UnsupportedGraphError(`${n.op} node ${n.name}: axes [${axes.join(', ')}] outside rank ${x.length}`);
  return out;
}

/** The axes of a reduction: an attribute (ReduceMean, ReduceLogSumExp at opset 13) or the second input (ReduceSum). */
export function reduceAxes(n: GraphNode, graph: Graph | undefined, rank: number): number[] {
  let axes: number[] | undefined;
  if (n.op === 'ReduceSum') axes = n.inputs[1] === undefined || n.inputs[1] === '' ? undefined : int64Values(graph!, n.inputs[1], `${n.op} node ${n.name}`);
  else axes = n.attrs['axes'] === undefined ? undefined : ints(n, 'axes', []);
  const all = Array.from({ length: rank }, (_, i) => i);
  return (axes ?? all).map((a) => (a < 0 ? a + rank : a));
}

const reduce: ShapeRule = (n, [x], graph) => reduced(n, x!, reduceAxes(n, graph, x!.length), int(n, 'keepdims', 1));

const elementwise: ShapeRule = (n, [a, b]) => broadcast(a!, b!, `${n.op} node ${n.name}`);
const same: ShapeRule = (_n, [x]) => x!;

const shapeRules: Record<string, ShapeRule> = {
  Gemm: (n, [a, b]) => {
    const [m] = int(n, 'transA', 0) ? [a![1]!] : [a![0]!];
    const cols = int(n, 'transB', 0) ? b![0]! : b![1]!;
    return [m!, cols];
  },
  MatMul: (n, [a, b]) => {
    if (a!.length < 2 || b!.length < 2)
      throw new UnsupportedGraphError(`MatMul node ${n.name}: 1-D operands are not supported (got [${a!.join(', ')}] × [${b!.join(', ')}])`);
    if (a!.length === 2 && b!.length === 2) return [a![0]!, b![1]!];
    const lead = broadcast(a!.slice(0, -2), b!.slice(0, -2), `MatMul node ${n.name}`);
    return [...lead, a!.at(-2)!, b!.at(-1)!];
  },
  Gather: (n, [data, indices]) => {
    if (int(n, 'axis', 0) !== 0) throw new UnsupportedGraphError(`Gather node ${n.name}: only axis 0 is supported`);
    return [...indices!, ...data!.slice(1)];
  },
  Tanh: same,
  Erf: same,
  Pow: elementwise,
  LayerNormalization: same,
  Add: elementwise,
  Sub: elementwise,
  Mul: elementwise,
  Div: elementwise,
  Relu: same,
  Identity: same,
  Dropout: same,
  BatchNormalization: same,
  Conv: (n, [x, w]) => {
    const k = w!.slice(2);
    const pads = ints(n, 'pads', [0, 0, 0, 0]);
    const strides = ints(n, 'strides', [1, 1]);
    return [x![0]!, w![0]!, ...k.map((kk, i) => spatialOut(x![2 + i]!, kk, strides[i]!, pads[i]!, pads[i + k.length]!))];
  },
  MaxPool: (n, [x]) => {
    const k = ints(n, 'kernel_shape', []);
    const pads = ints(n, 'pads', k.map(() => 0).concat(k.map(() => 0)));
    const strides = ints(
      n,
      'strides',
      k.map(() => 1),
    );
    return [x![0]!, x![1]!, ...k.map((kk, i) => spatialOut(x![2 + i]!, kk, strides[i]!, pads[i]!, pads[i + k.length]!))];
  },
  GlobalAveragePool: (_n, [x]) => [x![0]!, x![1]!, ...x!.slice(2).map(() => 1)],
  Flatten: (n, [x]) => {
    const axis = int(n, 'axis', 1);
    const prod = (s: Shape): number => (s.includes(-1) ? -1 : s.reduce((a, b) => a * b, 1));
    return [prod(x!.slice(0, axis)), prod(x!.slice(axis))];
  },
  Reshape: (n, [x], graph) => {
    const target = int64Values(graph, n.inputs[1]!, `Reshape node ${n.name}`);
    const out = target.map((d, i) => (d === 0 ? x![i]! : d));
    const known = x!.includes(-1) ? -1 : x!.reduce((a, b) => a * b, 1);
    const minus = out.indexOf(-1);
    if (minus >= 0 && known !== -1) out[minus] = known / out.filter((_, i) => i !== minus).reduce((a, b) => a * b, 1);
    // A −1 with a dynamic batch: it stands for the batch when the rest matches the sample size.
    return out;
  },
  Transpose: (n, [x]) => {
    const perm = ints(
      n,
      'perm',
      x!.map((_, i) => x!.length - 1 - i),
    );
    return perm.map((p) => x![p]!);
  },
  Neg: same,
  Exp: same,
  Abs: same,
  Cast: same,
  Log: same,
  Sqrt: same,
  LogSoftmax: same,
  Softmax: same,
  Max: elementwise,
  Sum: (n, ins) => ins.reduce((a, b) => broadcast(a, b, `Sum node ${n.name}`)),
  ReduceSum: reduce,
  ReduceMean: reduce,
  ReduceLogSumExp: reduce,
  Concat: (n, ins) => {
    const axis = int(n, 'axis', 0);
    const a = axis < 0 ? axis + ins[0]!.length : axis;
    return ins[0]!.map((d, i) => (i === a ? ins.reduce((t, s) => t + s[i]!, 0) : d));
  },
  GatherElements: (_n, [, indices]) => indices!,
  OneHot: (n, [indices], graph) => {
    if (int(n, 'axis', -1) !== -1) throw new UnsupportedGraphError(`OneHot node ${n.name}: only axis −1 is supported`);
    const depth = graph.initializers.get(n.inputs[1]!);
    if (depth === undefined || depth.data.length !== 1) throw new UnsupportedGraphError(`OneHot node ${n.name}: depth must be a constant scalar`);
    return [...indices!, Number(depth.data[0]!)];
  },
  Where: (n, [c, x, y]) => broadcast(broadcast(c!, x!, `Where node ${n.name}`), y!, `Where node ${n.name}`),
};

/** The sizes of Split's pieces along its axis: the `split` input (opset 13+) or attribute, else equal parts. */
export function splitSizes(n: GraphNode, x: Shape, graph: Graph): { axis: number; sizes: number[] } {
  const axis0 = int(n, 'axis', 0);
  const axis = axis0 < 0 ? axis0 + x.length : axis0;
  const given =
    n.inputs[1] !== undefined && n.inputs[1] !== ''
      ? int64Values(graph, n.inputs[1], `Split node ${n.name}`)
      : n.attrs['split'] !== undefined
        ? ints(n, 'split', [])
        : undefined;
  if (given !== undefined) return { axis, sizes: given };
  const parts = n.outputs.length;
  if (x[axis]! % parts !== 0) throw new UnsupportedGraphError(`Split node ${n.name}: axis ${axis} of size ${x[axis]} does not split into ${parts} equal parts`);
  return { axis, sizes: new Array<number>(parts).fill(x[axis]! / parts) };
}

/** Ops with several outputs: one shape each. */
const multiShapeRules: Record<string, (node: GraphNode, inputs: Shape[], graph: Graph) => Shape[]> = {
  Split: (n, [x], graph) => {
    const { axis, sizes } = splitSizes(n, x!, graph);
    return sizes.map((s) => x!.map((d, i) => (i === axis ? s : d)));
  },
};

const SHAPE_OPS: ReadonlySet<string> = new Set([...Object.keys(shapeRules), ...Object.keys(multiShapeRules)]);

/** The shapes of a node's outputs from its inputs' (the first output only for single-output ops). */
export function nodeShapes(node: GraphNode, inputs: Shape[], graph: Graph): Shape[] {
  const multi = multiShapeRules[node.op];
  if (multi !== undefined) return multi(node, inputs, graph);
  const rule = shapeRules[node.op];
  if (rule === undefined)
    throw new UnsupportedGraphError(`unsupported op ${node.op} (node ${node.name}): the ORT engine trains ${[...SHAPE_OPS].sort().join(', ')}`);
  return [rule(node, inputs, graph)];
}

/**
 * Shapes of every tensor in the graph, given its inputs' (batch = −1). Initializers have their
 * own. Throws UnsupportedGraphError naming the first node with an op outside the supported set.
 */
export function inferShapes(graph: Graph, inputs: ReadonlyMap<string, Shape>): Map<string, Shape> {
  const shapes = new Map<string, Shape>(inputs);
  for (const [name, init] of graph.initializers) shapes.set(name, init.dims);
  for (const node of graph.nodes) {
    const ins = node.inputs
      .filter((i) => i !== '')
      .map((i) => {
        const s = shapes.get(i);
        if (s === undefined) throw new UnsupportedGraphError(`${node.op} node ${node.name}: input ${i} has no known shape`);
        return s;
      });
    nodeShapes(node, ins, graph).forEach((s, k) => shapes.set(node.outputs[k]!, s));
  }
  return shapes;
}
