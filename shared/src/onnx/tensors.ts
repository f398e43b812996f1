/**
 * A teacher's intermediate tensors, for feature capture: every value a node produces, with its
 * element type and its shape per sample. The shapes come from running the model itself, not
 * from a shape-inference table of our own: a copy of the model (the file is untouched) gets
 * every node output as a graph output and runs one sample and then two samples of zeros; a
 * tensor whose first dimension follows the batch (1, then 2) is per sample, and its other
 * dimensions are its shape. This works for every op onnxruntime runs, with no rule per op.
 */
import onnxProto from 'onnx-proto';
import { GraphFormatError } from './graph.js';
import { OrtSession } from './ort-session.js';

const { onnx } = onnxProto;

export interface TeacherTensor {
  readonly name: string;
  /** The op that produces it (its node's op type). */
  readonly op: string;
  /** ONNX element type as onnxruntime names it: float32, float16, int64, … */
  readonly dtype: string;
  /** Dimensions of one sample (the batch dimension left out). */
  readonly shape: readonly number[];
  readonly elements: number;
  /** One of the model's own outputs (the logits among them). */
  readonly output: boolean;
}

/** The model with `names` added as graph outputs (no type given: onnxruntime infers it). */
export function withOutputs(model: Uint8Array, names: readonly string[]): Uint8Array {
  const m = onnx.ModelProto.decode(model);
  const graph = m.graph;
  if (graph === undefined || graph === null) throw new GraphFormatError('model: no graph');
  const have = new Set((graph.output ?? []).map((o) => o.name));
  graph.output = [...(graph.output ?? []), ...names.filter((n) => !have.has(n)).map((name) => onnx.ValueInfoProto.create({ name }))];
  return onnx.ModelProto.encode(m).finish();
}

/**
 * Every per-sample tensor of a model with one input of sample shape `sampleShape` (float32),
 * in the order its nodes run. Values that do not follow the batch (shapes, constants folded at
 * run time) are left out: they are not features of a sample.
 */
export async function listTensors(model: Uint8Array, sampleShape: readonly number[]): Promise<TeacherTensor[]> {
  const m = onnx.ModelProto.decode(model);
  const graph = m.graph;
  if (graph === undefined || graph === null) throw new GraphFormatError('model: no graph');
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).map((v) => v.name ?? '').filter((n) => !initializers.has(n));
  if (inputs.length !== 1) throw new GraphFormatError(`model: ${inputs.length} inputs; listing tensors needs one`);
  const producer = new Map<string, string>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o !== '' && !producer.has(o)) producer.set(o, n.opType ?? '');
  const outputs = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  const names = [...producer.keys()];
  const session = await OrtSession.create(withOutputs(model, names), { provider: 'cpu', intraOpThreads: 1 });
  try {
    const run = async (batch: number) => {
      const n = batch * sampleShape.reduce((a, b) => a * b, 1);
      return session.describeOutputs({ [inputs[0]!]: { data: new Float32Array(n), dims: [batch, ...sampleShape] } }, names);
    };
    const one = await run(1);
    const two = await run(2);
    return names.flatMap((name): TeacherTensor[] => {
      const a = one[name];
      const b = two[name];
      if (a === undefined || b === undefined || a.dims[0] !== 1 || b.dims[0] !== 2) return [];
      if (a.dims.length !== b.dims.length || a.dims.some((d, i) => i > 0 && d !== b.dims[i])) return [];
      const shape = a.dims.slice(1);
      return [{ name, op: producer.get(name)!, dtype: a.type, shape, elements: shape.reduce((x, y) => x * y, 1), output: outputs.has(name) }];
    });
  } finally {
    await session.release();
  }
}
