/**
 * K train steps per session run: the step graph becomes the body of an ONNX Loop. Parameters,
 * optimizer state and buffers are loop-carried; every per-step input is fed stacked ([K, …]) and
 * the body picks its row with Gather(·, iteration); logits and loss terms come out stacked.
 * What a run costs beyond its kernels — copying the updated weights and state out to
 * JavaScript, allocating them, starting the run — is then paid once per K steps.
 */
import { Graph, type Dim, type GraphValue } from '@distillate/shared/onnx';

export interface Carried {
  /** The step graph's input, and its output with the next value. */
  readonly input: string;
  readonly output: string;
  readonly dims: readonly Dim[];
}

export interface LoopedStep {
  readonly bytes: Uint8Array;
  /** Outer input names: the stacked form of each per-step input, the initial value of each carried one. */
  stacked(input: string): string;
  initial(input: string): string;
  /** Outer output names: the final value of each carried one, the stacked form of each scan output. */
  final(output: string): string;
  scanned(output: string): string;
}

const STACKED = '::steps';
const INITIAL = '::initial';
const FINAL = '::final';

/**
 * `step` must have no inputs other than `carried` and `perStep`; `scan` are outputs collected
 * from every iteration.
 */
export function loopSteps(
  step: Graph,
  carried: readonly Carried[],
  perStep: ReadonlyArray<{ readonly name: string; readonly dims: readonly Dim[]; readonly type?: GraphValue['type'] }>,
  scan: ReadonlyArray<{ readonly name: string; readonly dims: readonly Dim[] }>,
): LoopedStep {
  const known = new Set([...carried.map((c) => c.input), ...perStep.map((p) => p.name)]);
  const stray = step.inputs.filter((v) => !known.has(v.name));
  if (stray.length > 0) throw new Error(`internal: step inputs neither carried nor per step: ${stray.map((v) => v.name).join(', ')}`);

  const body = new Graph('distillate-step-body', step.opset);
  body.reserve(step.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  const iteration = body.input(body.fresh('iteration'), [], 'int64');
  const condIn = body.input(body.fresh('cond_in'), [], 'bool');
  for (const c of carried) body.input(c.input, c.dims);
  for (const p of perStep) body.node('Gather', [`${p.name}${STACKED}`, iteration], { axis: 0 }, p.name);
  for (const init of step.initializers.values()) body.initializer(init.name, init.data, init.dims);
  for (const n of step.nodes) body.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
  body.output(body.node('Identity', [condIn], {}, body.fresh('cond_out')), [], 'bool');
  for (const c of carried) body.output(c.output, c.dims);
  for (const s of scan) body.output(s.name, s.dims);

  const g = new Graph('distillate-train-steps', step.opset);
  for (const p of perStep) g.input(`${p.name}${STACKED}`, ['K', ...p.dims], p.type ?? 'float32');
  for (const c of carried) g.input(`${c.input}${INITIAL}`, c.dims);
  const first = perStep[0]!;
  const trips = g.node('Gather', [g.node('Shape', [`${first.name}${STACKED}`]), g.initializer('zero_index', BigInt64Array.of(0n), [])], { axis: 0 });
  g.add('Loop', [trips, '', ...carried.map((c) => `${c.input}${INITIAL}`)], { body: { graph: body } }, [
    ...carried.map((c) => `${c.output}${FINAL}`),
    ...scan.map((s) => `${s.name}${STACKED}`),
  ]);
  for (const c of carried) g.output(`${c.output}${FINAL}`, c.dims);
  for (const s of scan) g.output(`${s.name}${STACKED}`, ['K', ...s.dims]);
  return {
    bytes: g.toBytes(),
    stacked: (input) => `${input}${STACKED}`,
    initial: (input) => `${input}${INITIAL}`,
    final: (output) => `${output}${FINAL}`,
    scanned: (output) => `${output}${STACKED}`,
  };
}
