/**
 * Every gradient rule against central finite differences of an independent float64 forward
 * (plain loops below, not ONNX). The loss is L = Σ y·R for a fixed random R, so dL/dy = R and
 * dL/dx is what the rule's backward graph returns, run in onnxruntime (float32).
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { Graph, OrtSession, type AttributeValue } from '@distillate/shared/onnx';
import { differentiate } from './backward.js';
import { inferShapes, type Shape } from './shapes.js';

type Arr = Float64Array;
interface T64 {
  data: Arr;
  dims: number[];
}

const size = (d: readonly number[]): number => d.reduce((a, b) => a * b, 1);
const strides = (d: readonly number[]): number[] => d.map((_, i) => size(d.slice(i + 1)));

function broadcastOp(a: T64, b: T64, f: (x: number, y: number) => number): T64 {
  const n = Math.max(a.dims.length, b.dims.length);
  const pad = (d: number[]): number[] => [...new Array<number>(n - d.length).fill(1), ...d];
  const ad = pad(a.dims);
  const bd = pad(b.dims);
  const dims = ad.map((x, i) => Math.max(x, bd[i]!));
  const out = new Float64Array(size(dims));
  const os = strides(dims);
  const as = strides(ad);
  const bs = strides(bd);
  for (let i = 0; i < out.length; i++) {
    let ai = 0;
    let bi = 0;
    for (let k = 0; k < n; k++) {
      const c = Math.floor(i / os[k]!) % dims[k]!;
      if (ad[k]! > 1) ai += c * as[k]!;
      if (bd[k]! > 1) bi += c * bs[k]!;
    }
    out[i] = f(a.data[ai]!, b.data[bi]!);
  }
  return { data: out, dims };
}

function transpose(x: T64, perm: number[]): T64 {
  const dims = perm.map((p) => x.dims[p]!);
  const xs = strides(x.dims);
  const os = strides(dims);
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) {
    let src = 0;
    for (let k = 0; k < dims.length; k++) src += (Math.floor(i / os[k]!) % dims[k]!) * xs[perm[k]!]!;
    out[i] = x.data[src]!;
  }
  return { data: out, dims };
}

function gemm(a: T64, b: T64, c: T64 | undefined, tA: number, tB: number, alpha: number, beta: number): T64 {
  const A = tA ? transpose(a, [1, 0]) : a;
  const B = tB ? transpose(b, [1, 0]) : b;
  const [M, K] = A.dims as [number, number];
  const N = B.dims[1]!;
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A.data[m * K + k]! * B.data[k * N + n]!;
      y[m * N + n] = alpha * s;
    }
  const out = { data: y, dims: [M, N] };
  return c === undefined ? out : broadcastOp(out, c, (p, q) => p + beta * q);
}

function conv(x: T64, w: T64, bias: T64 | undefined, pads: number[], st: number[]): T64 {
  const [N, C, H, W] = x.dims as [number, number, number, number];
  const [M, , kh, kw] = w.dims as [number, number, number, number];
  const oh = Math.floor((H + pads[0]! + pads[2]! - kh) / st[0]!) + 1;
  const ow = Math.floor((W + pads[1]! + pads[3]! - kw) / st[1]!) + 1;
  const y = new Float64Array(N * M * oh * ow);
  for (let n = 0; n < N; n++)
    for (let m = 0; m < M; m++)
      for (let i = 0; i < oh; i++)
        for (let j = 0; j < ow; j++) {
          let s = bias === undefined ? 0 : bias.data[m]!;
          for (let c = 0; c < C; c++)
            for (let u = 0; u < kh; u++)
              for (let v = 0; v < kw; v++) {
                const r = i * st[0]! - pads[0]! + u;
                const q = j * st[1]! - pads[1]! + v;
                if (r < 0 || r >= H || q < 0 || q >= W) continue;
                s += x.data[((n * C + c) * H + r) * W + q]! * w.data[((m * C + c) * kh + u) * kw + v]!;
              }
          y[((n * M + m) * oh + i) * ow + j] = s;
        }
  return { data: y, dims: [N, M, oh, ow] };
}

function maxPool(x: T64, k: number): T64 {
  const [N, C, H, W] = x.dims as [number, number, number, number];
  const oh = Math.floor(H / k);
  const ow = Math.floor(W / k);
  const y = new Float64Array(N * C * oh * ow);
  for (let p = 0; p < N * C; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let best = -Infinity;
        for (let u = 0; u < k; u++) for (let v = 0; v < k; v++) best = Math.max(best, x.data[(p * H + i * k + u) * W + j * k + v]!);
        y[(p * oh + i) * ow + j] = best;
      }
  return { data: y, dims: [N, C, oh, ow] };
}

interface Case {
  readonly name: string;
  readonly op: string;
  readonly attrs?: Record<string, AttributeValue>;
  /** Input shapes; the first dim of the first input is the batch (given as −1 to the shape pass). */
  readonly inputs: readonly (readonly number[])[];
  /** Inputs not differentiated (e.g. a Reshape's shape), as int64 constants. */
  readonly int64Inputs?: Readonly<Record<number, readonly number[]>>;
  readonly ref: (xs: T64[]) => T64;
  /** Build the gradient for this execution provider's formulation (it still runs on the CPU EP here). */
  readonly target?: 'webgpu';
  /** Keep inputs away from kinks and ties (ReLU, MaxPool). */
  readonly spread?: boolean;
  /** Inputs in [0.5, 1.5] (Log, Sqrt). */
  readonly positive?: boolean;
  /** Inputs not differentiated, as float32 constants (a Pow's exponent). */
  readonly floatConsts?: Readonly<Record<number, readonly number[]>>;
  /** The graph's opset (default 13). */
  readonly opset?: number;
  /** Keep input 0's first dimension static (an embedding table), not the batch. */
  readonly staticFirst?: boolean;
  /** Inputs not differentiated, as bool constants (a Where's condition; 0 or 1). */
  readonly boolConsts?: Readonly<Record<number, readonly number[]>>;
  /** The op's output count, and which output the loss reads (the others take no gradient: Split). */
  readonly outputs?: { readonly count: number; readonly use: number };
}

const WHERE_COND = [1, 0, 1, 0, 0, 1];
const GATHER_ELEMENTS = [4, 0, 4, 2, 2, 1];

/** Rows of a [..., K] tensor times a [K, N] matrix, or batched [..., M, K]·[..., K, N] with equal leading dims. */
function batchedMatMul(a: T64, b: T64): T64 {
  const [M, K] = a.dims.slice(-2) as [number, number];
  const N = b.dims.at(-1)!;
  const batches = a.dims.slice(0, -2).reduce((x, y) => x * y, 1);
  const bBatched = b.dims.length > 2;
  const y = new Float64Array(batches * M * N);
  for (let t = 0; t < batches; t++)
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a.data[(t * M + m) * K + k]! * b.data[(bBatched ? t * K * N : 0) + k * N + n]!;
        y[(t * M + m) * N + n] = s;
      }
  return { data: y, dims: [...a.dims.slice(0, -2), M, N] };
}

const GATHER_INDICES = [0, 3, 3, 1, 4, 3];
function gatherRef(w: T64): T64 {
  const width = w.dims.slice(1).reduce((x, y) => x * y, 1);
  const y = new Float64Array(GATHER_INDICES.length * width);
  GATHER_INDICES.forEach((r, i) => y.set(w.data.subarray(r * width, (r + 1) * width), i * width));
  return { data: y, dims: [GATHER_INDICES.length, ...w.dims.slice(1)] };
}

function layerNormRef(x: T64, g: T64, b: T64, eps: number): T64 {
  const C = x.dims.at(-1)!;
  const y = new Float64Array(x.data.length);
  for (let r = 0; r < x.data.length / C; r++) {
    const row = x.data.subarray(r * C, (r + 1) * C);
    const mu = row.reduce((s, v) => s + v, 0) / C;
    const v = row.reduce((s, q) => s + (q - mu) ** 2, 0) / C;
    for (let c = 0; c < C; c++) y[r * C + c] = ((row[c]! - mu) / Math.sqrt(v + eps)) * g.data[c]! + b.data[c]!;
  }
  return { data: y, dims: x.dims };
}

/** erf by its series (|x| ≤ 3 here): exact to float64 rounding for the finite differences. */
function erfRef(x: number): number {
  let term = x;
  let s = x;
  for (let n = 1; n < 60; n++) {
    term *= (-x * x) / n;
    s += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * s;
}

const cases: Case[] = [
  {
    name: 'MatMul batched by a 2-D weight, [2,3,4]·[4,5]',
    op: 'MatMul',
    inputs: [
      [2, 3, 4],
      [4, 5],
    ],
    ref: ([a, b]) => batchedMatMul(a!, b!),
  },
  {
    name: 'MatMul batched, [2,2,3,4]·[2,2,4,3] (attention scores)',
    op: 'MatMul',
    inputs: [
      [2, 2, 3, 4],
      [2, 2, 4, 3],
    ],
    ref: ([a, b]) => batchedMatMul(a!, b!),
  },
  {
    name: 'Gather rows of a table (an index read twice and thrice), opset 13: one-hot Gemm',
    op: 'Gather',
    inputs: [[5, 3], [GATHER_INDICES.length]],
    int64Inputs: { 1: GATHER_INDICES },
    staticFirst: true,
    ref: ([w]) => gatherRef(w!),
  },
  {
    name: 'Gather rows of a table, opset 17: ScatterND with reduction add',
    op: 'Gather',
    inputs: [[5, 2, 2], [GATHER_INDICES.length]],
    int64Inputs: { 1: GATHER_INDICES },
    staticFirst: true,
    opset: 17,
    ref: ([w]) => gatherRef(w!),
  },
  ...[13, 17].map((opset) => ({
    name: `GatherElements along the last axis, an index repeated, opset ${opset}: ${opset >= 16 ? 'ScatterElements add' : 'one-hot product'}`,
    op: 'GatherElements',
    inputs: [
      [2, 5],
      [2, 3],
    ],
    int64Inputs: { 1: GATHER_ELEMENTS },
    attrs: { axis: -1 },
    opset,
    ref: ([x]: T64[]) => ({ data: Float64Array.from(GATHER_ELEMENTS, (c, i) => x!.data[Math.floor(i / 3) * 5 + c]!), dims: [2, 3] }),
  })),
  {
    name: 'Where with a constant condition (the causal mask), the branches broadcast',
    op: 'Where',
    inputs: [[2, 3], [2, 3], [3]],
    boolConsts: { 0: WHERE_COND },
    ref: ([a, b]) => ({ data: Float64Array.from({ length: 6 }, (_, i) => (WHERE_COND[i] ? a!.data[i]! : b!.data[i % 3]!)), dims: [2, 3] }),
    staticFirst: true,
  },
  {
    name: 'Split into 3, 1 and 2 along the last axis; the loss reads the middle piece',
    op: 'Split',
    inputs: [[2, 6], [3]],
    int64Inputs: { 1: [3, 1, 2] },
    attrs: { axis: 1 },
    outputs: { count: 3, use: 1 },
    ref: ([x]) => ({ data: Float64Array.from([x!.data[3]!, x!.data[9]!]), dims: [2, 1] }),
  },
  { name: 'Tanh', op: 'Tanh', inputs: [[3, 4]], ref: ([x]) => ({ data: x!.data.map(Math.tanh), dims: x!.dims }) },
  { name: 'Erf', op: 'Erf', inputs: [[3, 4]], ref: ([x]) => ({ data: x!.data.map(erfRef), dims: x!.dims }) },
  {
    name: 'Pow by a constant 3 (GELU tanh form)',
    op: 'Pow',
    inputs: [[3, 4], []],
    floatConsts: { 1: [3] },
    ref: ([x]) => ({ data: x!.data.map((v) => v ** 3), dims: x!.dims }),
  },
  {
    name: 'LayerNormalization over the last axis, scale and bias (opset 17)',
    op: 'LayerNormalization',
    attrs: { axis: -1, epsilon: { float: 1e-5 } },
    inputs: [[2, 3, 6], [6], [6]],
    opset: 17,
    ref: ([x, g, b]) => layerNormRef(x!, g!, b!, 1e-5),
  },
  ...[0, 1].flatMap((tA) =>
    [0, 1].map((tB) => ({
      name: `Gemm transA=${tA} transB=${tB}, alpha 0.7, beta 1.3, bias [N]`,
      op: 'Gemm',
      attrs: { transA: tA, transB: tB, alpha: { float: 0.7 }, beta: { float: 1.3 } },
      inputs: [tA ? [4, 3] : [3, 4], tB ? [5, 4] : [4, 5], [5]],
      ref: ([a, b, c]: T64[]) => gemm(a!, b!, c, tA, tB, 0.7, 1.3),
    })),
  ),
  {
    name: 'Gemm with a [M, N] bias',
    op: 'Gemm',
    inputs: [
      [3, 4],
      [4, 2],
      [3, 2],
    ],
    ref: ([a, b, c]) => gemm(a!, b!, c, 0, 0, 1, 1),
  },
  {
    name: 'MatMul',
    op: 'MatMul',
    inputs: [
      [3, 4],
      [4, 5],
    ],
    ref: ([a, b]) => gemm(a!, b!, undefined, 0, 0, 1, 0),
  },
  {
    name: 'Add, broadcast [2,3,4] + [3,1]',
    op: 'Add',
    inputs: [
      [2, 3, 4],
      [3, 1],
    ],
    ref: ([a, b]) => broadcastOp(a!, b!, (p, q) => p + q),
  },
  {
    name: 'Sub, broadcast [2,3] − [1,3] (over the batch)',
    op: 'Sub',
    inputs: [
      [2, 3],
      [1, 3],
    ],
    ref: ([a, b]) => broadcastOp(a!, b!, (p, q) => p - q),
  },
  { name: 'Mul, broadcast [2,3,4] · [4]', op: 'Mul', inputs: [[2, 3, 4], [4]], ref: ([a, b]) => broadcastOp(a!, b!, (p, q) => p * q) },
  {
    name: 'Div, broadcast [2,3,4] / [3,1]',
    op: 'Div',
    inputs: [
      [2, 3, 4],
      [3, 1],
    ],
    ref: ([a, b]) => broadcastOp(a!, b!, (p, q) => p / q),
    spread: true,
  },
  { name: 'Relu', op: 'Relu', inputs: [[3, 7]], ref: ([x]) => ({ data: x!.data.map((v) => Math.max(0, v)), dims: x!.dims }), spread: true },
  { name: 'Identity', op: 'Identity', inputs: [[2, 3]], ref: ([x]) => x! },
  { name: 'Flatten', op: 'Flatten', inputs: [[2, 3, 2, 2]], ref: ([x]) => ({ data: x!.data, dims: [2, 12] }) },
  { name: 'Reshape to [-1, 2, 3]', op: 'Reshape', inputs: [[2, 6], [3]], int64Inputs: { 1: [-1, 2, 3] }, ref: ([x]) => ({ data: x!.data, dims: [2, 2, 3] }) },
  { name: 'Transpose [0,2,3,1]', op: 'Transpose', attrs: { perm: [0, 2, 3, 1] }, inputs: [[2, 3, 4, 5]], ref: ([x]) => transpose(x!, [0, 2, 3, 1]) },
  {
    name: 'Conv 3×3, pad 1, stride 1, bias',
    op: 'Conv',
    attrs: { pads: [1, 1, 1, 1] },
    inputs: [[2, 3, 6, 6], [4, 3, 3, 3], [4]],
    ref: ([x, w, b]) => conv(x!, w!, b, [1, 1, 1, 1], [1, 1]),
  },
  {
    name: 'Conv 1×1 (a FitNets regressor: the matrix-product formulation), bias',
    op: 'Conv',
    attrs: {},
    inputs: [[2, 3, 4, 5], [4, 3, 1, 1], [4]],
    ref: ([x, w, b]) => conv(x!, w!, b, [0, 0, 0, 0], [1, 1]),
  },
  {
    name: 'Conv 1×1, stride 2 (the general formulation)',
    op: 'Conv',
    attrs: { strides: [2, 2] },
    inputs: [
      [2, 3, 4, 4],
      [2, 3, 1, 1],
    ],
    ref: ([x, w]) => conv(x!, w!, undefined, [0, 0, 0, 0], [2, 2]),
  },
  {
    name: 'Conv 3×3, pad 1, stride 2 on 7×7 (output padding)',
    op: 'Conv',
    attrs: { pads: [1, 1, 1, 1], strides: [2, 2] },
    inputs: [
      [2, 2, 7, 7],
      [3, 2, 3, 3],
    ],
    ref: ([x, w]) => conv(x!, w!, undefined, [1, 1, 1, 1], [2, 2]),
  },
  {
    name: 'Conv 3×3, no pad, stride 2 on 8×8 (dW cropped)',
    op: 'Conv',
    attrs: { strides: [2, 2] },
    inputs: [[2, 2, 8, 8], [3, 2, 3, 3], [3]],
    ref: ([x, w, b]) => conv(x!, w!, b, [0, 0, 0, 0], [2, 2]),
  },
  {
    name: 'Conv 3×3, pad 1, stride 2 on 7×7, the WebGPU formulation of dW',
    op: 'Conv',
    attrs: { pads: [1, 1, 1, 1], strides: [2, 2] },
    inputs: [
      [2, 2, 7, 7],
      [3, 2, 3, 3],
    ],
    ref: ([x, w]) => conv(x!, w!, undefined, [1, 1, 1, 1], [2, 2]),
    target: 'webgpu',
  },
  {
    name: 'Conv 3×3, no pad, stride 2 on 8×8, the WebGPU formulation of dW (cropped)',
    op: 'Conv',
    attrs: { strides: [2, 2] },
    inputs: [[2, 2, 8, 8], [3, 2, 3, 3], [3]],
    ref: ([x, w, b]) => conv(x!, w!, b, [0, 0, 0, 0], [2, 2]),
    target: 'webgpu',
  },
  {
    name: 'Conv 5×5, pad 2, one input channel',
    op: 'Conv',
    attrs: { pads: [2, 2, 2, 2] },
    inputs: [[3, 1, 6, 6], [2, 1, 5, 5], [2]],
    ref: ([x, w, b]) => conv(x!, w!, b, [2, 2, 2, 2], [1, 1]),
  },
  {
    name: 'MaxPool 2×2 on 6×6',
    op: 'MaxPool',
    attrs: { kernel_shape: [2, 2], strides: [2, 2] },
    inputs: [[2, 3, 6, 6]],
    ref: ([x]) => maxPool(x!, 2),
    spread: true,
  },
  {
    name: 'MaxPool 2×2 on 7×7 (last row and column dropped)',
    op: 'MaxPool',
    attrs: { kernel_shape: [2, 2], strides: [2, 2] },
    inputs: [[2, 2, 7, 7]],
    ref: ([x]) => maxPool(x!, 2),
    spread: true,
  },
  {
    name: 'GlobalAveragePool',
    op: 'GlobalAveragePool',
    inputs: [[2, 3, 4, 5]],
    ref: ([x]) => {
      const [N, C, H, W] = x!.dims as [number, number, number, number];
      const y = new Float64Array(N * C);
      for (let p = 0; p < N * C; p++) for (let i = 0; i < H * W; i++) y[p]! += x!.data[p * H * W + i]! / (H * W);
      return { data: y, dims: [N, C, 1, 1] };
    },
  },
  { name: 'Neg', op: 'Neg', inputs: [[2, 3]], ref: ([x]) => ({ data: x!.data.map((v) => -v), dims: x!.dims }) },
  { name: 'Exp', op: 'Exp', inputs: [[2, 3]], ref: ([x]) => ({ data: x!.data.map(Math.exp), dims: x!.dims }) },
  { name: 'Log', op: 'Log', inputs: [[2, 3]], ref: ([x]) => ({ data: x!.data.map((v) => Math.log(v)), dims: x!.dims }), positive: true },
  { name: 'Abs', op: 'Abs', inputs: [[2, 3]], ref: ([x]) => ({ data: x!.data.map(Math.abs), dims: x!.dims }), spread: true },
  { name: 'Sqrt', op: 'Sqrt', inputs: [[2, 3]], ref: ([x]) => ({ data: x!.data.map((v) => Math.sqrt(v)), dims: x!.dims }), positive: true },
  { name: 'LogSoftmax (last axis)', op: 'LogSoftmax', attrs: { axis: -1 }, inputs: [[3, 5]], ref: ([x]) => logSoftmaxRef(x!) },
  {
    name: 'Softmax (last axis)',
    op: 'Softmax',
    attrs: { axis: 1 },
    inputs: [[3, 5]],
    ref: ([x]) => ({ data: logSoftmaxRef(x!).data.map(Math.exp), dims: x!.dims }),
  },
  {
    name: 'ReduceSum over axis 1, keepdims',
    op: 'ReduceSum',
    inputs: [[3, 4], [1]],
    int64Inputs: { 1: [1] },
    ref: ([x]) => reduceRef(x!, [1], true, (v) => v.reduce((a, b) => a + b, 0)),
  },
  {
    name: 'ReduceSum over axes 1 and 2, no keepdims',
    op: 'ReduceSum',
    attrs: { keepdims: 0 },
    inputs: [[2, 3, 4], [2]],
    int64Inputs: { 1: [1, 2] },
    ref: ([x]) => reduceRef(x!, [1, 2], false, (v) => v.reduce((a, b) => a + b, 0)),
  },
  {
    name: 'ReduceSum over every axis, the batch included',
    op: 'ReduceSum',
    attrs: { keepdims: 0 },
    inputs: [[3, 4]],
    ref: ([x]) => ({ data: Float64Array.of(x!.data.reduce((a, b) => a + b, 0)), dims: [] }),
  },
  {
    name: 'ReduceMean over axis 1, no keepdims',
    op: 'ReduceMean',
    attrs: { axes: [1], keepdims: 0 },
    inputs: [[3, 4]],
    ref: ([x]) => reduceRef(x!, [1], false, (v) => v.reduce((a, b) => a + b, 0) / v.length),
  },
  {
    name: 'ReduceLogSumExp over axis 1, keepdims',
    op: 'ReduceLogSumExp',
    attrs: { axes: [1] },
    inputs: [[3, 4]],
    ref: ([x]) => reduceRef(x!, [1], true, (v) => Math.log(v.reduce((a, b) => a + Math.exp(b), 0))),
  },
  { name: 'Max, broadcast [2,3] with [3]', op: 'Max', inputs: [[2, 3], [3]], ref: ([a, b]) => broadcastOp(a!, b!, Math.max), spread: true },
  {
    name: 'Sum of three',
    op: 'Sum',
    inputs: [[2, 3], [2, 3], [3]],
    ref: ([a, b, c]) =>
      broadcastOp(
        broadcastOp(a!, b!, (p, q) => p + q),
        c!,
        (p, q) => p + q,
      ),
  },
  {
    name: 'Concat along axis 1',
    op: 'Concat',
    attrs: { axis: 1 },
    inputs: [
      [2, 3],
      [2, 1],
    ],
    ref: ([a, b]) => ({
      data: Float64Array.from({ length: 8 }, (_, i) => (i % 4 < 3 ? a!.data[Math.floor(i / 4) * 3 + (i % 4)]! : b!.data[Math.floor(i / 4)]!)),
      dims: [2, 4],
    }),
  },
];

const rowsOf = (x: T64): { N: number; C: number } => ({ N: x.dims.slice(0, -1).reduce((a, b) => a * b, 1), C: x.dims.at(-1)! });

function logSoftmaxRef(x: T64): T64 {
  const { N, C } = rowsOf(x);
  const y = new Float64Array(x.data.length);
  for (let r = 0; r < N; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x.data[r * C + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x.data[r * C + c]! - m);
    for (let c = 0; c < C; c++) y[r * C + c] = x.data[r * C + c]! - m - Math.log(s);
  }
  return { data: y, dims: x.dims };
}

/** Reduce over `axes` (keepdims 0 or 1) with f over the values of each group. */
function reduceRef(x: T64, axes: number[], keep: boolean, f: (v: number[]) => number): T64 {
  const outDims = x.dims.map((d, i) => (axes.includes(i) ? 1 : d));
  const groups = new Map<number, number[]>();
  const xs = strides(x.dims);
  const os = strides(outDims);
  for (let i = 0; i < x.data.length; i++) {
    let o = 0;
    for (let k = 0; k < x.dims.length; k++) if (!axes.includes(k)) o += (Math.floor(i / xs[k]!) % x.dims[k]!) * os[k]!;
    (groups.get(o) ?? groups.set(o, []).get(o)!).push(x.data[i]!);
  }
  const data = Float64Array.from({ length: size(outDims) }, (_, o) => f(groups.get(o)!));
  return { data, dims: keep ? outDims : x.dims.filter((_, i) => !axes.includes(i)) };
}

function randomInputs(c: Case, seed: number): Float64Array[] {
  const rand = mulberry32(seed);
  return c.inputs.map((dims) => {
    const a = new Float64Array(size(dims));
    for (let i = 0; i < a.length; i++) {
      // spread: distinct magnitudes ≥ 0.1 from zero, so a ±1e-3 nudge never crosses a kink or a tie
      a[i] =
        c.positive === true
          ? 0.5 + rand()
          : c.spread === true
            ? (rand() < 0.5 ? -1 : 1) * (0.1 + i * 0.37 + rand() * 0.2) * (rand() < 0.5 ? 1 : 0.5)
            : rand() * 2 - 1;
    }
    if (c.spread === true)
      for (let i = a.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [a[i], a[j]] = [a[j]!, a[i]!];
      }
    return a;
  });
}

describe('gradient rules match float64 central finite differences', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const g = new Graph('rule-test', c.opset ?? 13);
      const constant = (i: number): boolean => c.int64Inputs?.[i] !== undefined || c.floatConsts?.[i] !== undefined || c.boolConsts?.[i] !== undefined;
      const diff = c.inputs.map((_, i) => i).filter((i) => !constant(i));
      const batched = (i: number): boolean => i === 0 && c.staticFirst !== true;
      const names = c.inputs.map((dims, i) => {
        const fixed = c.int64Inputs?.[i];
        if (fixed !== undefined)
          return dims.length > 1
            ? g.initializer(
                g.fresh('idx'),
                BigInt64Array.from(fixed, (v) => BigInt(v)),
                dims,
              )
            : g.int64('shape', fixed);
        const values = c.floatConsts?.[i];
        if (values !== undefined) return g.constant('const', values, dims);
        const flags = c.boolConsts?.[i];
        if (flags !== undefined) return g.initializer(g.fresh('cond'), Uint8Array.from(flags), dims);
        return g.input(`x${i}`, batched(i) ? ['N', ...dims.slice(1)] : dims);
      });
      const outs = c.outputs === undefined ? ['y'] : Array.from({ length: c.outputs.count }, (_, k) => (k === c.outputs!.use ? 'y' : `y_${k}`));
      const y = g.add(c.op, names, c.attrs ?? {}, outs)[c.outputs?.use ?? 0]!;
      const known = new Map<string, Shape>(diff.map((i) => [names[i]!, batched(i) ? [-1, ...c.inputs[i]!.slice(1)] : c.inputs[i]!]));
      const shapes = inferShapes(g, known);
      const yDims = c.ref(c.inputs.map((d) => ({ data: new Float64Array(size(d)), dims: [...d] })).filter((_, i) => !constant(i))).dims;
      g.input(
        'dy',
        yDims.map((d, i) => (i === 0 && shapes.get(y)![0] === -1 ? 'N' : d)),
      );
      const grads = differentiate({
        forward: g,
        shapes,
        wrt: diff.map((i) => names[i]!),
        output: y,
        outputGrad: 'dy',
        into: g,
        ...(c.target === undefined ? {} : { target: c.target }),
      });
      for (const i of diff)
        g.output(
          grads.get(names[i]!)!,
          c.inputs[i]!.map((d, k) => (batched(i) && k === 0 ? 'N' : d)),
        );

      const xs = randomInputs(c, 7);
      const rand = mulberry32(99);
      const R = new Float64Array(size(yDims)).map(() => rand() * 2 - 1);
      const loss = (inputs: Float64Array[]): number => {
        const out = c.ref(inputs.map((data, i) => ({ data, dims: [...c.inputs[i]!] })).filter((_, i) => !constant(i)));
        let s = 0;
        for (let i = 0; i < out.data.length; i++) s += out.data[i]! * R[i]!;
        return s;
      };
      const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
      try {
        const feeds: Record<string, { data: Float32Array; dims: number[] }> = { dy: { data: Float32Array.from(R), dims: yDims } };
        for (const i of diff) feeds[names[i]!] = { data: Float32Array.from(xs[i]!), dims: [...c.inputs[i]!] };
        const got = await session.runMany(
          feeds,
          diff.map((i) => grads.get(names[i]!)!),
        );
        const eps = 1e-3;
        for (const i of diff) {
          const g32 = got[grads.get(names[i]!)!]!;
          // The float64 forward sees the same float32-rounded inputs the graph saw.
          const base = xs.map((a) => Float64Array.from(Float32Array.from(a)));
          let worst = 0;
          for (let j = 0; j < base[i]!.length; j++) {
            const plus = base.map((a) => a.slice());
            const minus = base.map((a) => a.slice());
            plus[i]![j]! += eps;
            minus[i]![j]! -= eps;
            const fd = (loss(plus) - loss(minus)) / (2 * eps);
            worst = Math.max(worst, Math.abs(g32[j]! - fd) / Math.max(1, Math.abs(fd)));
          }
          expect(worst, `input ${i}`).toBeLessThan(1e-4);
        }
      } finally {
        await session.release();
      }
    });
  }
});
