/**
 * An ONNX file as a language-model student (`student: { kind: onnx, path }`), e.g. one exported
 * by `torch.onnx.export`: its first input takes token ids (int32 or int64, [batch, L] with L
 * fixed or dynamic), its first output gives [batch, L, V] logits. The graph is rewired to the
 * trainer's names (int32 `input_ids`, a Cast where the model reads int64; `logits`) and its
 * shape arithmetic and constant subgraphs are folded for blocks of L (autodiff/fold.ts), so that
 * what remains is ops with gradient rules. The file is not changed.
 */
import { readFile } from 'node:fs/promises';
import { Graph, GraphFormatError } from '@distillate/shared/onnx';
import { LOGITS } from '../engine/engine.js';
import { foldConstants } from '../internal/autodiff/fold.js';
import { TOKEN_INPUT } from './transformer.js';

export async function loadLmStudent(path: string, L: number, V: number): Promise<Graph> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch {
    throw new GraphFormatError(`student ${path}: cannot read the file`);
  }
  const src = Graph.fromBytes(bytes, `student ${path}`);
  const input = src.inputs[0];
  const output = src.outputs[0];
  if (input === undefined || output === undefined) throw new GraphFormatError(`student ${path}: needs at least one input and one output`);
  if (src.inputs.length > 1)
    throw new GraphFormatError(
      `student ${path}: takes ${src.inputs.length} inputs (${src.inputs.map((i) => i.name).join(', ')}); a language-model student takes token ids only`,
    );
  if (input.type !== 'int32' && input.type !== 'int64')
    throw new GraphFormatError(`student ${path}: a language-model student takes integer token ids; input ${input.name} is ${input.type}`);
  const seq = input.dims[1];
  if (input.dims.length !== 2 || (typeof seq === 'number' && seq !== L))
    throw new GraphFormatError(`student ${path}: input ${input.name} has shape [${input.dims.join(', ')}]; the dataset's blocks are [batch, ${L}]`);
  const last = output.dims.at(-1);
  if (output.dims.length !== 3 || (typeof last === 'number' && last !== V))
    throw new GraphFormatError(
      `student ${path}: output ${output.name} has shape [${output.dims.join(', ')}]; the tokenizer's vocabulary needs [batch, ${L}, ${V}]`,
    );

  const g = new Graph(src.name, src.opset);
  g.reserve(src.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  for (const [k, v] of src.metadata) g.metadata.set(k, v);
  g.input(TOKEN_INPUT, ['N', L], 'int32');
  // The model's own input name becomes an inner tensor: the ids as the model reads them.
  const ids = input.type === 'int64' ? g.node('Cast', [TOKEN_INPUT], { to: 7 }) : TOKEN_INPUT;
  g.graft(
    src,
    new Map([
      [input.name, ids],
      [output.name, LOGITS],
    ]),
  );
  g.output(LOGITS, ['N', L, V]);
  return foldConstants(g, new Map([[TOKEN_INPUT, [-1, L]]]));
}
