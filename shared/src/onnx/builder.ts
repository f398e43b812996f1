/**
 * A small ONNX model builder over the official protobuf schema (onnx-proto). The trainer uses
 * it to export students; tests use it to make real teacher models for onnxruntime.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export type Dim = number | string;
export type AttributeValue = number | readonly number[] | string | { readonly float: number } | { readonly floats: readonly number[] };

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

function valueInfo(name: string, dims: readonly Dim[], elemType = FLOAT): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`attribute ${name}: use { float: ${value} } for float attributes`);
    return { name, type: T.INT, i: value };
  }
  if ('float' in value) return { name, type: T.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: T.FLOATS, floats: [...value.floats] };
  return { name, type: T.INTS, ints: [...(value as readonly number[])] };
}

export class OnnxModelBuilder {
  readonly #nodes: onnxProto.onnx.INodeProto[] = [];
  readonly #initializers: onnxProto.onnx.ITensorProto[] = [];
  readonly #inputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly #outputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly #metadata: Array<{ key: string; value: string }> = [];
  #counter = 0;

  constructor(
    readonly graphName: string,
    readonly opset = 13,
  ) {}

  /** A fresh tensor name with the given prefix. */
  name(prefix: string): string {
    return `${prefix}_${this.#counter++}`;
  }

  input(name: string, dims: readonly Dim[]): string {
    this.#inputs.push(valueInfo(name, dims));
    return name;
  }

  output(name: string, dims: readonly Dim[]): string {
    this.#outputs.push(valueInfo(name, dims));
    return name;
  }

  /** A float32 initializer (weights). */
  weight(prefix: string, values: Float32Array, dims: readonly number[]): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== values.length) throw new RangeError(`initializer ${prefix}: ${values.length} values for dims [${dims.join(', ')}]`);
    const name = this.name(prefix);
    const bytes = new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    this.#initializers.push({ name, dims: [...dims], dataType: FLOAT, rawData: bytes });
    return name;
  }

  /** An int64 initializer (shapes, axes). */
  int64(prefix: string, values: readonly number[]): string {
    const name = this.name(prefix);
    this.#initializers.push({ name, dims: [values.length], dataType: INT64, int64Data: [...values] });
    return name;
  }

  /** Append a node; returns its output name (a fresh one unless `output` is given). */
  node(opType: string, inputs: readonly string[], attrs: Record<string, AttributeValue> = {}, output?: string): string {
    const out = output ?? this.name(opType.toLowerCase());
    this.#nodes.push({
      opType,
      name: this.name(`${opType}_node`),
      input: [...inputs],
      output: [out],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return out;
  }

  metadata(key: string, value: string): this {
    this.#metadata.push({ key, value });
    return this;
  }

  toBytes(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'distillate',
      producerVersion: '0.1.0',
      opsetImport: [{ domain: '', version: this.opset }],
      metadataProps: this.#metadata,
      graph: {
        name: this.graphName,
        node: this.#nodes,
        initializer: this.#initializers,
        input: this.#inputs,
        output: this.#outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
