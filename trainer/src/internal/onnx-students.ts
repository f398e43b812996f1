/**
 * Students as ONNX graphs for the ORT engine: the built-in MLP and CNN, or any ONNX file whose
 * ops have gradient rules. Every student takes the dataset's flat [N, D] rows (already scaled)
 * on input `input` and gives `logits`; an image model's own layout (NCHW or NHWC) is reached by
 * a Reshape (and Transpose) at the front, so student.onnx takes what every student takes.
 */
import { readFile } from 'node:fs/promises';
import { mulberry32 } from '@distillate/shared';
import { Graph, GraphFormatError } from '@distillate/shared/onnx';
import { foldConstants } from './autodiff/fold.js';
import { UnsupportedGraphError } from './autodiff/shapes.js';

export const STUDENT_INPUT = 'input';
export const STUDENT_LOGITS = 'logits';

export type OnnxStudentSpec =
  | { readonly kind: 'mlp'; readonly hidden: readonly number[]; readonly dropout: number }
  | {
      readonly kind: 'cnn';
      readonly blocks: ReadonlyArray<{ readonly filters: number; readonly kernel: number; readonly pool: boolean }>;
      readonly dense: readonly number[];
    }
  | { readonly kind: 'resnet'; readonly widths: readonly number[]; readonly blocksPerStage: number }
  | { readonly kind: 'layers'; readonly path: string }
  | { readonly kind: 'onnx'; readonly path: string };

/** Normal samples by Box–Muller, truncated at 2σ as Keras' variance-scaling initializers are. */
function truncatedNormal(rand: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n;) {
    const u = Math.max(rand(), 1e-12);
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
    if (Math.abs(z) <= 2) out[i++] = z * std;
  }
  return out;
}

/** He normal (fan-in, scale 2), the stddev corrected for the truncation as Keras does. */
const he = (rand: () => number, n: number, fanIn: number): Float32Array => truncatedNormal(rand, n, Math.sqrt(2 / fanIn) / 0.8796256610342398);

function glorotUniform(rand: () => number, n: number, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * limit);
}

export interface OnnxStudent {
  readonly graph: Graph;
  /** The flat sample size the graph takes. */
  readonly inputSize: number;
}

/** Build (or load) the student graph. `inputShape` is the dataset's sample shape, e.g. [28, 28, 1] (HWC). */
export async function buildOnnxStudent(spec: OnnxStudentSpec, inputShape: readonly number[], classes: number, seed: number): Promise<OnnxStudent> {
  const D = inputShape.reduce((a, b) => a * b, 1);
  const rand = mulberry32(seed);
  if (spec.kind === 'layers')
    throw new UnsupportedGraphError('student kind layers is a TF.js model; use engine: tfjs, or give the ort engine an ONNX file ({ onnx: path })');
  if (spec.kind === 'onnx') return loadOnnxStudent(spec.path, inputShape, classes);
  const g = new Graph('distillate-student');
  g.input(STUDENT_INPUT, ['N', D]);
  let x = STUDENT_INPUT;
  let width = D;
  const dense = (units: number, relu: boolean, last: boolean): void => {
    const w = g.initializer(g.fresh('dense_kernel'), last ? glorotUniform(rand, width * units, width, units) : he(rand, width * units, width), [width, units]);
    const b = g.initializer(g.fresh('dense_bias'), new Float32Array(units), [units]);
    x = g.node('Gemm', [x, w, b], {}, last ? STUDENT_LOGITS : undefined);
    if (relu) x = g.node('Relu', [x]);
    width = units;
  };
  if (spec.kind === 'mlp') {
    const ratio = spec.dropout > 0 ? g.constant('dropout_ratio', [spec.dropout], []) : undefined;
    for (const units of spec.hidden) {
      dense(units, true, false);
      // Inference form (identity); the train step draws the mask (train-mode.ts).
      if (ratio !== undefined) x = g.node('Dropout', [x, ratio]);
    }
    dense(classes, false, true);
  } else if (spec.kind === 'resnet') {
    x = resnetBody(g, x, inputShape, spec, rand);
    width = spec.widths.at(-1)!;
    dense(classes, false, true);
  } else {
    if (inputShape.length !== 3)
      throw new UnsupportedGraphError(`a cnn student needs image samples [H, W, C]; this dataset's samples are [${inputShape.join(', ')}]`);
    const [H, W, C] = inputShape as [number, number, number];
    x = g.node('Transpose', [g.node('Reshape', [x, g.int64('shape', [-1, H, W, C])])], { perm: [0, 3, 1, 2] });
    let [c, h, w] = [C, H, W];
    for (const block of spec.blocks) {
      const k = block.kernel;
      const kernel = g.initializer(g.fresh('conv_kernel'), he(rand, block.filters * c * k * k, c * k * k), [block.filters, c, k, k]);
      const bias = g.initializer(g.fresh('conv_bias'), new Float32Array(block.filters), [block.filters]);
      const lo = Math.floor((k - 1) / 2);
      const hi = k - 1 - lo;
      x = g.node('Relu', [g.node('Conv', [x, kernel, bias], { kernel_shape: [k, k], pads: [lo, lo, hi, hi] })]);
      c = block.filters;
      if (block.pool) {
        x = g.node('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2] });
        h = Math.floor(h / 2);
        w = Math.floor(w / 2);
      }
    }
    x = g.node('Flatten', [x], { axis: 1 });
    width = c * h * w;
    for (const units of spec.dense) dense(units, true, false);
    dense(classes, false, true);
  }
  g.output(STUDENT_LOGITS, ['N', classes]);
  return { graph: g, inputSize: D };
}

/**
 * The small ResNet of students.ts in NCHW: a 3×3 stem, then stages of basic blocks
 * (conv-BN-relu-conv-BN plus a shortcut, 1×1 conv-BN when the shape changes, then relu), the
 * first block of each later stage with stride 2, then global average pooling. BatchNorm as
 * Keras sets it up (γ 1, β 0, running mean 0 and variance 1, ε 1e-3, momentum 0.99).
 */
function resnetBody(
  g: Graph,
  input: string,
  inputShape: readonly number[],
  spec: { readonly widths: readonly number[]; readonly blocksPerStage: number },
  rand: () => number,
): string {
  if (inputShape.length !== 3)
    throw new UnsupportedGraphError(`a resnet student needs image samples [H, W, C]; this dataset's samples are [${inputShape.join(', ')}]`);
  const [H, W, C0] = inputShape as [number, number, number];
  let c = C0;
  const conv = (x: string, filters: number, k: number, stride: number): string => {
    const kernel = g.initializer(g.fresh('conv_kernel'), he(rand, filters * c * k * k, c * k * k), [filters, c, k, k]);
    const pad = Math.floor((k - 1) / 2);
    return g.node('Conv', [x, kernel], { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad] });
  };
  const bn = (x: string, channels: number): string =>
    g.node(
      'BatchNormalization',
      [
        x,
        g.initializer(g.fresh('bn_gamma'), new Float32Array(channels).fill(1), [channels]),
        g.initializer(g.fresh('bn_beta'), new Float32Array(channels), [channels]),
        g.initializer(g.fresh('bn_moving_mean'), new Float32Array(channels), [channels]),
        g.initializer(g.fresh('bn_moving_variance'), new Float32Array(channels).fill(1), [channels]),
      ],
      { epsilon: { float: 1e-3 }, momentum: { float: 0.99 } },
    );
  let x = g.node('Transpose', [g.node('Reshape', [input, g.int64('shape', [-1, H, W, C0])])], { perm: [0, 3, 1, 2] });
  x = g.node('Relu', [bn(conv(x, spec.widths[0]!, 3, 1), spec.widths[0]!)]);
  c = spec.widths[0]!;
  spec.widths.forEach((width, stage) => {
    for (let b = 0; b < spec.blocksPerStage; b++) {
      const stride = stage > 0 && b === 0 ? 2 : 1;
      const inC = c;
      let y = g.node('Relu', [bn(conv(x, width, 3, stride), width)]);
      c = width;
      y = bn(conv(y, width, 3, 1), width);
      let shortcut = x;
      if (stride !== 1 || inC !== width) {
        c = inC;
        shortcut = bn(conv(x, width, 1, stride), width);
        c = width;
      }
      x = g.node('Relu', [g.node('Add', [y, shortcut])]);
    }
  });
  return g.node('Flatten', [g.node('GlobalAveragePool', [x])], { axis: 1 });
}

/**
 * An ONNX file as a student. Its first input takes the samples: rank 2 ([N, D]) as is; rank 4
 * as NCHW when dim 1 is the dataset's channel count, else NHWC. Its first output is the logits.
 */
async function loadOnnxStudent(path: string, inputShape: readonly number[], classes: number): Promise<OnnxStudent> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch {
    throw new GraphFormatError(`student ${path}: cannot read the file`);
  }
  const src = Graph.fromBytes(bytes, `student ${path}`);
  const D = inputShape.reduce((a, b) => a * b, 1);
  const first = src.inputs[0];
  const out = src.outputs[0];
  if (first === undefined || out === undefined) throw new GraphFormatError(`student ${path}: needs at least one input and one output`);
  if (src.inputs.length > 1)
    throw new GraphFormatError(`student ${path}: takes ${src.inputs.length} inputs (${src.inputs.map((i) => i.name).join(', ')}); a student takes one`);
  const sample = first.dims.slice(1);
  if (sample.some((d) => typeof d !== 'number'))
    throw new GraphFormatError(`student ${path}: input ${first.name} has shape [${first.dims.join(', ')}]; only the batch dimension may be dynamic`);
  const dims = sample as number[];
  if (dims.reduce((a, b) => a * b, 1) !== D)
    throw new GraphFormatError(
      `student ${path}: input ${first.name} takes [${dims.join(', ')}] per sample, the dataset has ${D} values ([${inputShape.join(', ')}])`,
    );
  const lastDim = out.dims.at(-1);
  if (typeof lastDim === 'number' && lastDim !== classes)
    throw new GraphFormatError(`student ${path}: output ${out.name} has ${lastDim} classes, the task has ${classes}`);

  const g = new Graph('distillate-student', Math.max(13, src.opset));
  g.reserve(src.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  g.input(STUDENT_INPUT, ['N', D]);
  let x = STUDENT_INPUT;
  if (dims.length === 3) {
    const [H, W, C] = inputShape.length === 3 ? (inputShape as [number, number, number]) : [dims[1]!, dims[2]!, dims[0]!];
    const nchw = dims[0] === C && !(dims[2] === C && dims[0] !== C);
    x = g.node('Reshape', [x, g.int64('shape', [-1, H, W, C])]);
    if (nchw) x = g.node('Transpose', [x], { perm: [0, 3, 1, 2] });
  } else if (dims.length !== 1) {
    throw new GraphFormatError(`student ${path}: input ${first.name} has rank ${dims.length + 1}; a student takes [N, D] or [N, C, H, W] / [N, H, W, C]`);
  }
  g.graft(
    src,
    new Map([
      [first.name, x],
      [out.name, STUDENT_LOGITS],
    ]),
  );
  g.output(STUDENT_LOGITS, ['N', classes]);
  // Exporters' shape arithmetic (e.g. `x.view(x.size(0), -1)`) evaluated for this sample shape.
  return { graph: foldConstants(g, new Map([[STUDENT_INPUT, [-1, D]]])), inputSize: D };
}
