/**
 * Constant folding of an imported student graph before it is differentiated. Exporters such as
 * `torch.onnx.export` write shape arithmetic into the graph: Shape → Gather → Unsqueeze → Concat
 * into a Reshape's target, Range for positions, a Slice of a boolean mask buffer, Not and Cast
 * before a Where. None of it depends on a parameter, and with a fixed sample shape and a dynamic
 * batch all of it is known before the first step, except the batch itself. This pass evaluates
 * those nodes with the batch kept as a symbol and leaves constants in their place, so the graph
 * that remains is made of ops with gradient rules and static shapes (shapes.ts).
 *
 * A Reshape target that holds the batch gets 0 there ("copy this axis", ONNX's default) when the
 * input's axis is the batch, or −1 for one unknown entry; a folded value that needs the batch
 * anywhere else is refused with the node named. Float constants made here are listed in the
 * graph's frozen metadata, so they are never taken for parameters.
 */
import { Graph, type GraphNode, type InitializerData } from '@distillate/shared/onnx';
import { FROZEN_METADATA } from './train-graphs.js';
import { UnsupportedGraphError, nodeShapes, type Shape } from './shapes.js';

/** A value entry: a number, the batch ('N'), or an unknown that depends on it ('?'). */
type Entry = number | 'N' | '?';
type ValueType = 'float32' | 'int64' | 'int32' | 'bool';

interface Value {
  readonly type: ValueType;
  readonly dims: readonly number[];
  readonly data: readonly Entry[];
}

/** ONNX TensorProto data types that Cast's `to` names here. */
const CAST_TO: Record<number, ValueType> = { 1: 'float32', 6: 'int32', 7: 'int64', 9: 'bool' };

const size = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

function strides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1]! * dims[i + 1]!;
  return s;
}

function num(e: Entry, where: string): number {
  if (typeof e !== 'number') throw new UnsupportedGraphError(`${where}: needs a value that depends on the batch size`);
  return e;
}

function fromInitializer(data: InitializerData, dims: readonly number[]): Value {
  const type: ValueType = data instanceof Float32Array ? 'float32' : data instanceof BigInt64Array ? 'int64' : data instanceof Int32Array ? 'int32' : 'bool';
  return { type, dims, data: Array.from(data as ArrayLike<number | bigint>, Number) };
}

function toInitializer(v: Value, where: string): InitializerData {
  const nums = v.data.map((e) => num(e, where));
  if (v.type === 'float32') return Float32Array.from(nums);
  if (v.type === 'int64') return BigInt64Array.from(nums.map((x) => BigInt(Math.trunc(x))));
  if (v.type === 'int32') return Int32Array.from(nums);
  return Uint8Array.from(nums, (x) => (x === 0 ? 0 : 1));
}

/** Elementwise over numpy-broadcast operands; a symbolic operand gives '?' (the batch only through identity). */
function elementwise(type: ValueType, ins: readonly Value[], f: (...xs: number[]) => number): Value {
  const rank = Math.max(...ins.map((v) => v.dims.length));
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(Math.max(...ins.map((v) => v.dims[v.dims.length - rank + i] ?? 1)));
  const out: Entry[] = [];
  const st = ins.map((v) => strides(v.dims));
  for (let flat = 0; flat < size(dims); flat++) {
    const xs: Entry[] = ins.map((v, k) => {
      let idx = 0;
      let rem = flat;
      for (let i = rank - 1; i >= 0; i--) {
        const coord = rem % dims[i]!;
        rem = Math.floor(rem / dims[i]!);
        const j = i - (rank - v.dims.length);
        if (j >= 0 && v.dims[j]! > 1) idx += coord * st[k]![j]!;
      }
      return v.data[idx]!;
    });
    out.push(xs.every((x) => typeof x === 'number') ? f(...(xs as number[])) : '?');
  }
  return { type, dims, data: out };
}

function cast(v: Value, to: ValueType): Value {
  const data = v.data.map((e) => (typeof e !== 'number' ? e : to === 'bool' ? (e !== 0 ? 1 : 0) : to === 'float32' ? Math.fround(e) : Math.trunc(e)));
  return { type: to, dims: v.dims, data };
}

/** Gather along `axis` with constant indices (numpy `take`). */
function gather(data: Value, indices: Value, axis: number, where: string): Value {
  const a = axis < 0 ? axis + data.dims.length : axis;
  const outer = size(data.dims.slice(0, a));
  const inner = size(data.dims.slice(a + 1));
  const n = data.dims[a]!;
  const out: Entry[] = [];
  for (let o = 0; o < outer; o++)
    for (const ie of indices.data) {
      let i = num(ie, where);
      if (i < 0) i += n;
      for (let k = 0; k < inner; k++) out.push(data.data[(o * n + i) * inner + k]!);
    }
  return { type: data.type, dims: [...data.dims.slice(0, a), ...indices.dims, ...data.dims.slice(a + 1)], data: out };
}

function slice(data: Value, starts: number[], ends: number[], axes: number[], steps: number[]): Value {
  const rank = data.dims.length;
  const ranges = data.dims.map((d) => ({ start: 0, step: 1, count: d }));
  axes.forEach((axis0, k) => {
    const axis = axis0 < 0 ? axis0 + rank : axis0;
    const d = data.dims[axis]!;
    const step = steps[k] ?? 1;
    const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);
    let s = starts[k]!;
    let e = ends[k]!;
    s = s < 0 ? s + d : s;
    e = e < 0 ? e + d : e;
    if (step > 0) {
      s = clamp(s, 0, d);
      e = clamp(e, 0, d);
      ranges[axis] = { start: s, step, count: Math.max(0, Math.ceil((e - s) / step)) };
    } else {
      s = clamp(s, 0, d - 1);
      e = clamp(e, -1, d - 1);
      ranges[axis] = { start: s, step, count: Math.max(0, Math.ceil((e - s) / step)) };
    }
  });
  const dims = ranges.map((r) => r.count);
  const st = strides(data.dims);
  const out: Entry[] = [];
  for (let flat = 0; flat < size(dims); flat++) {
    let rem = flat;
    let idx = 0;
    for (let i = rank - 1; i >= 0; i--) {
      const c = rem % dims[i]!;
      rem = Math.floor(rem / dims[i]!);
      idx += (ranges[i]!.start + c * ranges[i]!.step) * st[i]!;
    }
    out.push(data.data[idx]!);
  }
  return { type: data.type, dims, data: out };
}

function transpose(v: Value, perm: readonly number[]): Value {
  const dims = perm.map((p) => v.dims[p]!);
  const st = strides(v.dims);
  const out: Entry[] = [];
  for (let flat = 0; flat < size(dims); flat++) {
    let rem = flat;
    let idx = 0;
    for (let i = dims.length - 1; i >= 0; i--) {
      const c = rem % dims[i]!;
      rem = Math.floor(rem / dims[i]!);
      idx += c * st[perm[i]!]!;
    }
    out.push(v.data[idx]!);
  }
  return { type: v.type, dims, data: out };
}

function ints(v: Value | undefined, where: string): number[] {
  return v === undefined ? [] : v.data.map((e) => num(e, where));
}

function attrInts(n: GraphNode, name: string): number[] | undefined {
  const a = n.attrs[name];
  return Array.isArray(a) ? [...(a as number[])] : undefined;
}

const attrInt = (n: GraphNode, name: string, fallback: number): number => (typeof n.attrs[name] === 'number' ? (n.attrs[name] as number) : fallback);

/** The node's outputs, evaluated; undefined when it cannot be folded (an input is not known). */
function evaluate(n: GraphNode, ins: ReadonlyArray<Value | undefined>, shapeOf: (name: string) => Shape | undefined): Value[] | undefined {
  const where = `${n.op} node ${n.name}`;
  if (n.op === 'Shape') {
    const s = shapeOf(n.inputs[0]!);
    if (s === undefined) return undefined;
    const rank = s.length;
    const norm = (x: number) => Math.min(Math.max(x < 0 ? x + rank : x, 0), rank);
    const dims = s.slice(norm(attrInt(n, 'start', 0)), norm(attrInt(n, 'end', rank)));
    return [{ type: 'int64', dims: [dims.length], data: dims.map((d) => (d === -1 ? 'N' : d)) }];
  }
  const present = n.inputs.map((name, i) => (name === '' ? null : ins[i]));
  if (present.some((v) => v === undefined)) return undefined;
  const [a, b, c] = present as (Value | null)[];
  switch (n.op) {
    case 'Identity':
      return [a!];
    case 'Cast': {
      const to = CAST_TO[attrInt(n, 'to', 1)];
      if (to === undefined) throw new UnsupportedGraphError(`${where}: casts to ONNX type ${attrInt(n, 'to', 1)}, which is not folded here`);
      return [cast(a!, to)];
    }
    case 'Gather':
      return [gather(a!, b!, attrInt(n, 'axis', 0), where)];
    case 'Unsqueeze': {
      const axes = attrInts(n, 'axes') ?? ints(b ?? undefined, where);
      const rank = a!.dims.length + axes.length;
      const norm = axes.map((x) => (x < 0 ? x + rank : x)).sort((x, y) => x - y);
      const dims = [...a!.dims];
      for (const x of norm) dims.splice(x, 0, 1);
      return [{ ...a!, dims }];
    }
    case 'Squeeze': {
      const given = attrInts(n, 'axes') ?? (b === null || b === undefined ? undefined : ints(b, where));
      const axes = (given ?? a!.dims.flatMap((d, i) => (d === 1 ? [i] : []))).map((x) => (x < 0 ? x + a!.dims.length : x));
      return [{ ...a!, dims: a!.dims.filter((_, i) => !axes.includes(i)) }];
    }
    case 'Concat': {
      const vs = present as Value[];
      const axis0 = attrInt(n, 'axis', 0);
      const axis = axis0 < 0 ? axis0 + vs[0]!.dims.length : axis0;
      const outer = size(vs[0]!.dims.slice(0, axis));
      const data: Entry[] = [];
      for (let o = 0; o < outer; o++)
        for (const v of vs) {
          const chunk = size(v.dims.slice(axis));
          data.push(...v.data.slice(o * chunk, (o + 1) * chunk));
        }
      return [{ type: vs[0]!.type, dims: vs[0]!.dims.map((d, i) => (i === axis ? vs.reduce((t, v) => t + v.dims[i]!, 0) : d)), data }];
    }
    case 'Slice': {
      const starts = attrInts(n, 'starts') ?? ints(b!, where);
      const ends = attrInts(n, 'ends') ?? ints(c!, where);
      const axes = attrInts(n, 'axes') ?? (present[3] ? ints(present[3], where) : starts.map((_, i) => i));
      const steps = present[4] ? ints(present[4], where) : starts.map(() => 1);
      return [slice(a!, starts, ends, axes, steps)];
    }
    case 'Range': {
      const [start, limit, delta] = [a!, b!, c!].map((v) => num(v.data[0]!, where));
      const count = Math.max(0, Math.ceil((limit! - start!) / delta!));
      return [{ type: a!.type, dims: [count], data: Array.from({ length: count }, (_, i) => start! + i * delta!) }];
    }
    case 'Reshape': {
      const target = ints(b!, where);
      const dims = target.map((d, i) => (d === 0 ? a!.dims[i]! : d));
      const minus = dims.indexOf(-1);
      if (minus >= 0) dims[minus] = size(a!.dims) / size(dims.filter((_, i) => i !== minus));
      return [{ ...a!, dims }];
    }
    case 'Transpose':
      return [transpose(a!, attrInts(n, 'perm') ?? a!.dims.map((_, i) => a!.dims.length - 1 - i))];
    case 'Expand': {
      const shape = ints(b!, where);
      const zero: Value = { type: a!.type, dims: shape, data: new Array<Entry>(size(shape)).fill(0) };
      return [elementwise(a!.type, [a!, zero], (x) => x)];
    }
    case 'Not':
      return [elementwise('bool', [a!], (x) => (x === 0 ? 1 : 0))];
    case 'Equal':
      return [elementwise('bool', [a!, b!], (x, y) => (x === y ? 1 : 0))];
    case 'Less':
      return [elementwise('bool', [a!, b!], (x, y) => (x! < y! ? 1 : 0))];
    case 'Greater':
      return [elementwise('bool', [a!, b!], (x, y) => (x! > y! ? 1 : 0))];
    case 'And':
      return [elementwise('bool', [a!, b!], (x, y) => (x && y ? 1 : 0))];
    case 'Or':
      return [elementwise('bool', [a!, b!], (x, y) => (x || y ? 1 : 0))];
    case 'Where':
      return [elementwise(b!.type, [a!, b!, c!], (k, x, y) => (k ? x! : y!))];
    case 'Add':
      return [elementwise(a!.type, [a!, b!], (x, y) => x! + y!)];
    case 'Sub':
      return [elementwise(a!.type, [a!, b!], (x, y) => x! - y!)];
    case 'Mul':
      return [elementwise(a!.type, [a!, b!], (x, y) => x! * y!)];
    case 'Div':
      return [elementwise(a!.type, [a!, b!], (x, y) => (a!.type === 'float32' ? x! / y! : Math.trunc(x! / y!)))];
    case 'Pow':
      return [elementwise(a!.type, [a!, b!], (x, y) => x! ** y!)];
    case 'Sqrt':
      return [elementwise(a!.type, [a!], (x) => Math.sqrt(x!))];
    case 'Neg':
      return [elementwise(a!.type, [a!], (x) => -x!)];
    case 'Trilu': {
      const upper = attrInt(n, 'upper', 1);
      const k = b === null || b === undefined ? 0 : num(b.data[0]!, where);
      const [R, C] = a!.dims.slice(-2) as [number, number];
      return [{ ...a!, data: a!.data.map((e, i) => ((upper ? (i % C) - (Math.floor(i / C) % R) >= k : (i % C) - (Math.floor(i / C) % R) <= k) ? e : 0)) }];
    }
    default:
      return undefined;
  }
}

/** Whether an initializer is a parameter (float32, rank ≥ 1, not frozen): those are never folded. */
function isParameter(g: Graph, name: string, frozen: ReadonlySet<string>): boolean {
  const init = g.initializers.get(name);
  return init !== undefined && init.data instanceof Float32Array && init.dims.length > 0 && !frozen.has(name);
}

/**
 * The graph with every node that does not depend on an input or a parameter evaluated away (and
 * Shape evaluated from the static shapes). `inputs`: the graph inputs' shapes, the batch −1.
 */
export function foldConstants(src: Graph, inputs: ReadonlyMap<string, Shape>): Graph {
  const frozen = new Set((src.metadata.get(FROZEN_METADATA) ?? '').split(',').filter((x) => x !== ''));
  const values = new Map<string, Value>();
  for (const [name, init] of src.initializers) if (!isParameter(src, name, frozen)) values.set(name, fromInitializer(init.data, init.dims));

  const g = new Graph(src.name, src.opset);
  g.reserve(src.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  for (const [k, v] of src.metadata) g.metadata.set(k, v);
  for (const i of src.inputs) g.input(i.name, i.dims, i.type);
  for (const [name, init] of src.initializers) if (isParameter(src, name, frozen)) g.initializer(name, init.data, init.dims);
  const shapes = new Map<string, Shape>(inputs);
  for (const [name, init] of g.initializers) shapes.set(name, init.dims);

  const made = new Set<string>();
  /** A folded value as an initializer of the new graph, once. `reshapeOf`: a Reshape target for that input. */
  const materialize = (name: string, where: string, reshapeOf?: string): string => {
    const v = values.get(name)!;
    let out = name;
    let data = v.data;
    if (reshapeOf !== undefined && data.some((e) => typeof e !== 'number')) {
      const x = shapes.get(reshapeOf)!;
      data = data.map((e, i) => (e === 'N' && x[i] === -1 ? 0 : e));
      const unknown = data.filter((e) => typeof e !== 'number').length;
      if (unknown > 1 || (unknown === 1 && data.includes(-1)))
        throw new UnsupportedGraphError(`${where}: its target shape depends on the batch size in more than one place`);
      data = data.map((e) => (typeof e === 'number' ? e : -1));
      out = `${name}.target`;
    }
    if (!made.has(out)) {
      made.add(out);
      g.initializer(out, toInitializer({ ...v, data }, where), v.dims);
      shapes.set(out, v.dims);
      if (v.type === 'float32' && v.dims.length > 0) frozen.add(out);
    }
    return out;
  };

  for (const n of src.nodes) {
    const where = `${n.op} node ${n.name}`;
    const ins = n.inputs.map((i) => (i === '' ? undefined : values.get(i)));
    const folded = n.op === 'Shape' || n.inputs.every((i, k) => i === '' || ins[k] !== undefined) ? evaluate(n, ins, (x) => shapes.get(x)) : undefined;
    if (folded !== undefined) {
      folded.forEach((v, k) => values.set(n.outputs[k]!, v));
      continue;
    }
    const inputsNow = n.inputs.map((i, k) => (i === '' || !values.has(i) ? i : materialize(i, where, n.op === 'Reshape' && k === 1 ? n.inputs[0] : undefined)));
    g.add(n.op, inputsNow, { ...n.attrs }, n.outputs);
    const added = g.nodes.at(-1)!;
    const ins2 = inputsNow
      .filter((i) => i !== '')
      .map((i) => {
        const s = shapes.get(i);
        if (s === undefined) throw new UnsupportedGraphError(`${where}: input ${i} has no known shape`);
        return s;
      });
    nodeShapes(added, ins2, g).forEach((s, k) => shapes.set(n.outputs[k]!, s));
  }
  for (const o of src.outputs) {
    if (values.has(o.name)) throw new UnsupportedGraphError(`output ${o.name} does not depend on the input`);
    g.output(o.name, o.dims, o.type);
  }
  if (frozen.size > 0) g.metadata.set(FROZEN_METADATA, [...frozen].join(','));
  return g;
}
