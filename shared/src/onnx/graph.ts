/**
 * An editable ONNX graph: plain nodes, inputs, outputs and float32/int64 initializers, read from
 * and written to ModelProto bytes. The trainer's ORT engine builds students, their reverse-mode
 * gradients and optimizer updates on it; OnnxModelBuilder stays the write-only helper.
 */
import onnxProto from 'onnx-proto';
import type { AttributeValue, Dim } from './builder.js';

const { onnx } = onnxProto;
const T = onnx.TensorProto.DataType;
const A = onnx.AttributeProto.AttributeType;

/** A node attribute: the builder's kinds, or a subgraph (Loop's body). */
export type GraphAttribute = AttributeValue | { readonly graph: Graph };

export interface GraphNode {
  readonly op: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attrs: Readonly<Record<string, GraphAttribute>>;
  readonly name: string;
}

export interface GraphValue {
  readonly name: string;
  readonly dims: readonly Dim[];
  /** Element type: float32 activations, int32 token ids, uint8 pixels, int64 shapes, bool conditions. */
  readonly type: 'float32' | 'int32' | 'uint8' | 'int64' | 'bool';
}

/** float32, int64, int32 and bool (one byte per value, 0 or 1) tensors. */
export type InitializerData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export interface Initializer {
  readonly name: string;
  readonly dims: readonly number[];
  readonly data: InitializerData;
}

export class GraphFormatError extends Error {
  override readonly name = 'GraphFormatError';
}

const ELEM_TYPE = { float32: T.FLOAT, int32: T.INT32, uint8: T.UINT8, int64: T.INT64, bool: T.BOOL } as const satisfies Record<GraphValue['type'], number>;

function valueInfo(v: GraphValue): onnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ELEM_TYPE[v.type],
        shape: { dim: v.dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

function attributeProto(name: string, value: GraphAttribute): onnxProto.onnx.IAttributeProto {
  if (typeof value === 'object' && value !== null && 'graph' in value) return { name, type: A.GRAPH, g: value.graph.toGraphProto() };
  if (typeof value === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`attribute ${name}: use { float: ${value} } for float attributes`);
    return { name, type: A.INT, i: value };
  }
  if ('float' in value) return { name, type: A.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: A.FLOATS, floats: [...value.floats] };
  return { name, type: A.INTS, ints: [...(value as readonly number[])] };
}

function attributeValue(a: onnxProto.onnx.IAttributeProto, where: string): AttributeValue {
  switch (a.type) {
    case A.INT:
      return Number(a.i ?? 0);
    case A.INTS:
      return (a.ints ?? []).map(Number);
    case A.FLOAT:
      return { float: a.f ?? 0 };
    case A.FLOATS:
      return { floats: [...(a.floats ?? [])] };
    case A.STRING:
      return new TextDecoder().decode(a.s ?? new Uint8Array());
    default:
      throw new GraphFormatError(`${where}: attribute ${a.name} has a type (${a.type}) this graph reader does not take`);
  }
}

function tensorData(t: onnxProto.onnx.ITensorProto, where: string): InitializerData {
  const count = (t.dims ?? []).reduce<number>((n, d) => n * Number(d), 1);
  const raw = t.rawData !== undefined && t.rawData !== null && t.rawData.length > 0 ? t.rawData : undefined;
  if (t.dataType === T.FLOAT) {
    if (raw !== undefined) return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const f = Float32Array.from(t.floatData ?? []);
    if (f.length !== count) throw new GraphFormatError(`${where}: initializer ${t.name} has ${f.length} values for ${count} elements`);
    return f;
  }
  if (t.dataType === T.INT64) {
    if (raw !== undefined) return new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    return BigInt64Array.from((t.int64Data ?? []).map((v) => BigInt(String(v))));
  }
  if (t.dataType === T.INT32) {
    if (raw !== undefined) return new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    return Int32Array.from(t.int32Data ?? []);
  }
  if (t.dataType === T.BOOL) {
    // One byte per value in raw_data; int32_data otherwise.
    if (raw !== undefined) return Uint8Array.from(raw, (v) => (v === 0 ? 0 : 1));
    return Uint8Array.from(t.int32Data ?? [], (v) => (v === 0 ? 0 : 1));
  }
  throw new GraphFormatError(
    `${where}: initializer ${t.name} is of ONNX data type ${t.dataType}; only float32, int64, int32 and bool initializers are supported`,
  );
}

export class Graph {
  readonly nodes: GraphNode[] = [];
  readonly inputs: GraphValue[] = [];
  readonly outputs: GraphValue[] = [];
  readonly initializers = new Map<string, Initializer>();
  readonly metadata = new Map<string, string>();
  #counter = 0;
  #used = new Set<string>();

  constructor(
    readonly name = 'graph',
    readonly opset = 13,
  ) {}

  /** A name not used yet in this graph, starting with `prefix`. */
  fresh(prefix: string): string {
    let n: string;
    do n = `${prefix}_${this.#counter++}`;
    while (this.#used.has(n));
    this.#used.add(n);
    return n;
  }

  /** Mark names as taken (e.g. another graph's tensors that this one refers to). */
  reserve(names: Iterable<string>): void {
    for (const n of names) this.#used.add(n);
  }

  #claim(name: string): string {
    this.#used.add(name);
    return name;
  }

  input(name: string, dims: readonly Dim[], type: GraphValue['type'] = 'float32'): string {
    this.inputs.push({ name: this.#claim(name), dims, type });
    return name;
  }

  output(name: string, dims: readonly Dim[], type: GraphValue['type'] = 'float32'): string {
    this.outputs.push({ name, dims, type });
    return name;
  }

  initializer(name: string, data: InitializerData, dims: readonly number[]): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw new RangeError(`initializer ${name}: ${data.length} values for dims [${dims.join(', ')}]`);
    this.initializers.set(this.#claim(name), { name, dims, data });
    return name;
  }

  /** A float32 constant initializer with a fresh name. */
  constant(prefix: string, values: Float32Array | readonly number[], dims: readonly number[]): string {
    return this.initializer(this.fresh(prefix), values instanceof Float32Array ? values : Float32Array.from(values), dims);
  }

  /** An int64 constant (shapes, axes). */
  int64(prefix: string, values: readonly number[]): string {
    return this.initializer(this.fresh(prefix), BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
  }

  /** Append a node with `outputs` fresh outputs (or the names given); returns them. */
  add(op: string, inputs: readonly string[], attrs: Record<string, GraphAttribute> = {}, outputs: number | readonly string[] = 1): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(op.toLowerCase())) : outputs.map((o) => this.#claim(o));
    this.nodes.push({ op, inputs: [...inputs], outputs: outs, attrs, name: this.fresh(`${op}_node`) });
    return outs;
  }

  /**
   * Append another graph's initializers and nodes (a loaded model inside a graph built around
   * it), renaming the tensors `rename` names, e.g. the model's input and output to this graph's.
   */
  graft(src: Graph, rename: ReadonlyMap<string, string>): void {
    for (const init of src.initializers.values()) this.initializer(init.name, init.data, init.dims);
    for (const n of src.nodes)
      this.add(
        n.op,
        n.inputs.map((i) => rename.get(i) ?? i),
        { ...n.attrs },
        n.outputs.map((o) => rename.get(o) ?? o),
      );
  }

  /**
   * Drop the nodes whose outputs nothing reads (no later node, no graph output, no subgraph),
   * then the initializers nothing reads. Nodes are in topological order, so one backward pass
   * finds them all. onnxruntime runs unread nodes inside a Loop body; a builder that emits more
   * than it needs (a gradient rule gives every input's gradient) prunes here.
   */
  prune(): void {
    const read = new Set(this.outputs.map((o) => o.name));
    const readBy = (nodes: readonly GraphNode[]): void => {
      for (const n of nodes) {
        for (const i of n.inputs) read.add(i);
        for (const a of Object.values(n.attrs)) if (typeof a === 'object' && a !== null && 'graph' in a) readBy(a.graph.nodes);
      }
    };
    const kept: GraphNode[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i]!;
      if (!n.outputs.some((o) => read.has(o))) continue;
      kept.push(n);
      readBy([n]);
    }
    this.nodes.splice(0, this.nodes.length, ...kept.reverse());
    for (const name of [...this.initializers.keys()]) if (!read.has(name)) this.initializers.delete(name);
  }

  /** Append a one-output node; returns its output. */
  node(op: string, inputs: readonly string[], attrs: Record<string, GraphAttribute> = {}, output?: string): string {
    return this.add(op, inputs, attrs, output === undefined ? 1 : [output])[0]!;
  }

  toGraphProto(): onnxProto.onnx.IGraphProto {
    const initializer: onnxProto.onnx.ITensorProto[] = [...this.initializers.values()].map((i) => {
      const bytes = new Uint8Array(i.data.buffer.slice(i.data.byteOffset, i.data.byteOffset + i.data.byteLength));
      const dataType = i.data instanceof Float32Array ? T.FLOAT : i.data instanceof BigInt64Array ? T.INT64 : i.data instanceof Int32Array ? T.INT32 : T.BOOL;
      return { name: i.name, dims: [...i.dims], dataType, rawData: bytes };
    });
    return {
      name: this.name,
      node: this.nodes.map((n) => ({
        opType: n.op,
        name: n.name,
        input: [...n.inputs],
        output: [...n.outputs],
        attribute: Object.entries(n.attrs).map(([k, v]) => attributeProto(k, v)),
      })),
      initializer,
      input: this.inputs.map(valueInfo),
      output: this.outputs.map(valueInfo),
    };
  }

  toBytes(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'distillate',
      producerVersion: '0.1.0',
      opsetImport: [{ domain: '', version: this.opset }],
      metadataProps: [...this.metadata].map(([key, value]) => ({ key, value })),
      graph: this.toGraphProto(),
    });
    return onnx.ModelProto.encode(model).finish();
  }

  /** Read a model: nodes, float32/int64 initializers, and the inputs that are not initializers. */
  static fromBytes(bytes: Uint8Array, where = 'model'): Graph {
    let m: onnxProto.onnx.ModelProto;
    try {
      m = onnx.ModelProto.decode(bytes);
    } catch (err) {
      throw new GraphFormatError(`${where}: not an ONNX model (${(err as Error).message})`);
    }
    const opset = (m.opsetImport ?? []).find((o) => (o.domain ?? '') === '')?.version;
    const g = new Graph(m.graph?.name ?? 'graph', Number(opset ?? 13));
    const graph = m.graph;
    if (graph === undefined || graph === null) throw new GraphFormatError(`${where}: no graph`);
    for (const t of graph.initializer ?? []) g.initializer(t.name ?? '', tensorData(t, where), (t.dims ?? []).map(Number));
    const dimsOf = (v: onnxProto.onnx.IValueInfoProto): Dim[] =>
      (v.type?.tensorType?.shape?.dim ?? []).map((d) =>
        d.dimValue !== undefined && d.dimValue !== null && Number(d.dimValue) > 0 ? Number(d.dimValue) : d.dimParam || 'N',
      );
    const typeOf = (v: onnxProto.onnx.IValueInfoProto): GraphValue['type'] => {
      const t = v.type?.tensorType?.elemType;
      const known = (Object.keys(ELEM_TYPE) as Array<GraphValue['type']>).find((k) => ELEM_TYPE[k] === t);
      if (known === undefined)
        throw new GraphFormatError(`${where}: value ${v.name} has ONNX element type ${t}; float32, int32, uint8, int64 and bool are supported`);
      return known;
    };
    for (const v of graph.input ?? []) if (!g.initializers.has(v.name ?? '')) g.input(v.name ?? '', dimsOf(v), typeOf(v));
    for (const v of graph.output ?? []) g.output(v.name ?? '', dimsOf(v), typeOf(v));
    for (const n of graph.node ?? []) {
      const where2 = `${where}: node ${n.name || n.opType}`;
      if ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx') throw new GraphFormatError(`${where2}: operator domain "${n.domain}" is not supported`);
      if (n.opType === 'Constant') {
        // Folded into an initializer of the same name: the graph then holds tensors, not constant ops.
        const t = (n.attribute ?? []).find((a) => a.name === 'value')?.t;
        if (t === undefined || t === null || (n.output ?? []).length !== 1)
          throw new GraphFormatError(`${where2}: only Constant nodes with a tensor "value" are supported`);
        g.initializer(n.output![0]!, tensorData(t, where2), (t.dims ?? []).map(Number));
        continue;
      }
      const attrs: Record<string, AttributeValue> = {};
      for (const a of n.attribute ?? []) attrs[a.name ?? ''] = attributeValue(a, where2);
      for (const o of n.output ?? []) g.#used.add(o);
      g.nodes.push({ op: n.opType ?? '', inputs: [...(n.input ?? [])], outputs: [...(n.output ?? [])], attrs, name: n.name || g.fresh(`${n.opType}_node`) });
    }
    for (const p of m.metadataProps ?? []) g.metadata.set(p.key ?? '', p.value ?? '');
    return g;
  }
}
