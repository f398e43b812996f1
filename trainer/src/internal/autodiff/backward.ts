/**
 * Reverse-mode differentiation of an ONNX graph: a plain walk over the forward nodes in reverse
 * topological order that accumulates output gradients, calls the op's rule and hands the input
 * gradients on. No per-model code: the rules table decides everything.
 */
import type { Graph } from '@distillate/shared/onnx';
import { gradientRules, type GradContext, type GradRule } from './rules.js';
import { UnsupportedGraphError, type Shape } from './shapes.js';

export interface BackwardSpec {
  /** The forward graph (its nodes are read, not changed). */
  readonly forward: Graph;
  /** Every tensor's static shape (inferShapes). */
  readonly shapes: ReadonlyMap<string, Shape>;
  /** The tensors to differentiate with respect to (the parameters). */
  readonly wrt: readonly string[];
  /** Output tensor and the name of its incoming gradient (a tensor of `into`). */
  readonly output: string;
  readonly outputGrad: string;
  /** The graph that receives the backward nodes. Forward tensor names stay valid in it. */
  readonly into: Graph;
  /** The execution provider it will run on (GradContext.target). */
  readonly target?: GradContext['target'];
  /** The rules table (the one in rules.ts unless a test swaps a rule). */
  readonly rules?: Readonly<Record<string, GradRule>>;
}

/** Gradient tensor (in `into`) of each `wrt` tensor; a parameter the output does not depend on gets none. */
export function differentiate(spec: BackwardSpec): Map<string, string> {
  const { shapes, into } = spec;
  const nodes = spec.forward.nodes.slice(); // `into` may be the forward graph itself
  into.reserve(shapes.keys());
  const consts = new Map<string, string>();
  const shapeOf = (name: string): Shape => {
    const s = shapes.get(name);
    if (s === undefined) throw new Error(`internal: no shape for ${name}`);
    return s;
  };
  const ctx: GradContext = {
    graph: into,
    ...(spec.target === undefined ? {} : { target: spec.target }),
    shape: shapeOf,
    node: (op, inputs, attrs) => into.node(op, inputs, attrs ?? {}),
    int64: (values) => {
      const key = `i:${values.join(',')}`;
      let name = consts.get(key);
      if (name === undefined) consts.set(key, (name = into.int64('shape', values)));
      return name;
    },
    scalar: (value) => {
      const key = `f:${value}`;
      let name = consts.get(key);
      if (name === undefined) consts.set(key, (name = into.constant('scalar', [value], [])));
      return name;
    },
    unbroadcast: (dy, from, to) => {
      if (from.length === to.length && from.every((d, i) => d === to[i])) return dy;
      const lead = from.length - to.length;
      const axes: number[] = [];
      for (let i = 0; i < from.length; i++) if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i);
      const summed = axes.length === 0 ? dy : into.node('ReduceSum', [dy, ctx.int64(axes)], { keepdims: 1 });
      return into.node('Reshape', [summed, ctx.int64(to.length === 0 ? [] : to)]);
    },
  };

  // Which tensors depend on a parameter: only their gradients are built.
  const needs = new Set<string>(spec.wrt);
  for (const n of nodes) if (n.inputs.some((i) => needs.has(i))) for (const o of n.outputs) needs.add(o);
  if (!needs.has(spec.output)) throw new UnsupportedGraphError(`output ${spec.output} does not depend on any parameter`);

  const pending = new Map<string, string[]>([[spec.output, [spec.outputGrad]]]);
  const total = (name: string): string | undefined => {
    const parts = pending.get(name);
    if (parts === undefined || parts.length === 0) return undefined;
    if (parts.length === 1) return parts[0];
    return into.node('Sum', parts);
  };
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i]!;
    if (!node.outputs.some((o) => needs.has(o) && pending.has(o))) continue;
    const rule = (spec.rules ?? (gradientRules as Readonly<Record<string, GradRule>>))[node.op];
    if (rule === undefined) throw new UnsupportedGraphError(`unsupported op ${node.op} (node ${node.name}): no gradient rule`);
    const dOut = node.outputs.map(total);
    const dIn = rule(ctx, node, dOut);
    // One gradient (or undefined) per input: a rule that returns more or fewer has mistaken the op's signature.
    if (dIn.length !== node.inputs.length)
      throw new Error(
        `internal: the ${node.op} gradient rule gave ${dIn.length} input gradients for node ${node.name}, which has ${node.inputs.length} inputs`,
      );
    node.inputs.forEach((input, k) => {
      const g = dIn[k];
      if (g === undefined || !needs.has(input)) return;
      const list = pending.get(input) ?? [];
      list.push(g);
      pending.set(input, list);
    });
  }
  const out = new Map<string, string>();
  for (const p of spec.wrt) {
    const g = total(p);
    if (g !== undefined) out.set(p, g);
  }
  return out;
}
