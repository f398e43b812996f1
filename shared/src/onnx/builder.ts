/**
 * A small write-only ONNX model builder: the trainer's TF.js export and the tests' teacher
 * models use it. It is a thin front on Graph (graph.ts), which holds the one ModelProto encoder.
 */
import { Graph } from './graph.js';

export type Dim = number | string;
export type AttributeValue = number | readonly number[] | string | { readonly float: number } | { readonly floats: readonly number[] };

export class OnnxModelBuilder {
  readonly #graph: Graph;

  constructor(
    readonly graphName: string,
    readonly opset = 13,
  ) {
    this.#graph = new Graph(graphName, opset);
  }

  /** A fresh tensor name with the given prefix. */
  name(prefix: string): string {
    return this.#graph.fresh(prefix);
  }

  input(name: string, dims: readonly Dim[]): string {
    return this.#graph.input(name, dims);
  }

  output(name: string, dims: readonly Dim[]): string {
    return this.#graph.output(name, dims);
  }

  /** A float32 initializer (weights). */
  weight(prefix: string, values: Float32Array, dims: readonly number[]): string {
    return this.#graph.initializer(this.name(prefix), values.slice(), dims);
  }

  /** An int64 initializer (shapes, axes). */
  int64(prefix: string, values: readonly number[]): string {
    return this.#graph.int64(prefix, values);
  }

  /** Append a node; returns its output name (a fresh one unless `output` is given). */
  node(opType: string, inputs: readonly string[], attrs: Record<string, AttributeValue> = {}, output?: string): string {
    return this.#graph.node(opType, inputs, attrs, output);
  }

  metadata(key: string, value: string): this {
    this.#graph.metadata.set(key, value);
    return this;
  }

  toBytes(): Uint8Array {
    return this.#graph.toBytes();
  }
}
