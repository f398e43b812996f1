/**
 * Text from a causal language model (a trained student.onnx, or any teacher the server serves):
 * the prompt is tokenized, the model reads the last `context` tokens (padded at the end: under the
 * causal mask padding after a position never changes its logits), and the next token comes from
 * its logits at the last real position: greedy at temperature 0, else drawn from softmax(z / T)
 * restricted to the smallest set of tokens holding `topP` of the mass (nucleus sampling), by a
 * seeded generator.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadTokenizer, mulberry32, type TextTokenizer } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';

export interface GenerateOptions {
  readonly model: string;
  /** A tokenizer.json; default: the file the model's sidecar names, beside the model. */
  readonly tokenizer?: string;
  readonly prompt: string;
  readonly maxTokens?: number;
  /** 0: greedy. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
}

interface Sidecar {
  readonly tokenizer?: string;
  readonly context?: number;
  readonly vocabSize?: number;
  readonly input?: string;
  readonly logitsOutput?: string;
}

/** The next token from one position's logits. */
export function pickToken(z: ArrayLike<number>, temperature: number, topP: number, rand: () => number): number {
  let best = 0;
  for (let v = 1; v < z.length; v++) if (z[v]! > z[best]!) best = v;
  if (temperature === 0) return best;
  const p = Array.from(z, (v) => Math.exp((v - z[best]!) / temperature));
  const total = p.reduce((s, x) => s + x, 0);
  const order = p.map((x, i) => [x / total, i] as const).sort((a, b) => b[0] - a[0]);
  let mass = 0;
  const kept: (readonly [number, number])[] = [];
  for (const e of order) {
    kept.push(e);
    mass += e[0];
    if (mass >= topP) break;
  }
  let u = rand() * mass;
  for (const [q, i] of kept) if ((u -= q) <= 0) return i;
  return kept.at(-1)![1];
}

export async function generate(o: GenerateOptions): Promise<{ text: string; tokens: number[]; tokenizer: TextTokenizer['ref'] }> {
  const sidecarPath = o.model.replace(/\.onnx$/i, '.json');
  const sidecar = JSON.parse(await readFile(sidecarPath, 'utf8').catch(() => '{}')) as Sidecar;
  const tokenizerPath = o.tokenizer ?? (sidecar.tokenizer === undefined ? undefined : join(dirname(o.model), sidecar.tokenizer));
  if (tokenizerPath === undefined) throw new Error(`${o.model}: give --tokenizer (its sidecar ${sidecarPath} names none)`);
  const tokenizer = await loadTokenizer(tokenizerPath);
  const session = await OrtSession.create(o.model, { provider: 'cpu' });
  try {
    const input = session.inputs.find((i) => i.name === (sidecar.input ?? session.inputs[0]?.name));
    const output = sidecar.logitsOutput ?? session.outputs[0]?.name;
    if (input === undefined || output === undefined) throw new Error(`${o.model}: no input or output to read`);
    const L = sidecar.context ?? (typeof input.shape[1] === 'number' ? input.shape[1] : undefined);
    if (L === undefined) throw new Error(`${o.model}: the context length is unknown; give "context" in ${sidecarPath}`);
    const V = tokenizer.ref.vocabSize;
    const ids = tokenizer.encode(o.prompt);
    if (ids.length === 0) throw new Error('the prompt is empty');
    const rand = mulberry32(o.seed ?? 1);
    const out: number[] = [];
    for (let step = 0; step < (o.maxTokens ?? 48); step++) {
      const window = [...ids, ...out].slice(-L);
      const fed = input.type === 'int64' ? new BigInt64Array(L) : new Int32Array(L);
      window.forEach((t, i) => (fed[i] = (input.type === 'int64' ? BigInt(t) : t) as never));
      const z = (await session.runMany({ [input.name]: { data: fed, dims: [1, L] } }, [output]))[output]!;
      out.push(pickToken(z.subarray((window.length - 1) * V, window.length * V), o.temperature ?? 0, o.topP ?? 1, rand));
    }
    return { text: tokenizer.decode(out), tokens: out, tokenizer: tokenizer.ref };
  } finally {
    await session.release();
  }
}
