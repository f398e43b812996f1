/**
 * Training a language-model student on the ORT engine: a token dataset (blocks of L tokens),
 * optionally a token cache of a teacher over it (dense, top-k or sampled), next-token
 * cross-entropy plus a per-position distillation term (token-batch.ts), evaluated on a test split
 * in bits per byte (tokenizer-independent: summed log-loss over the UTF-8 bytes of the predicted
 * tokens, from the dataset's token byte table), perplexity per token and, with a teacher cache
 * over the test split, next-token top-1 agreement with the teacher. Writes metrics.jsonl,
 * student.onnx with a sidecar that makes it a causal-LM teacher for the server, report.html, and
 * run.json last.
 *
 * Memory: the dataset and the cache stream in lockstep through a shuffle buffer sized by bytes,
 * and a step holds its batch's [N, L, V] tensors only.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LogitCacheReader, TokenDatasetReader, writeFileAtomic } from '@distillate/shared';
import type { Graph } from '@distillate/shared/onnx';
import { resolveCacheDir } from '../cache-ref.js';
import { clearRun, findResumePoint, keptMetrics, saveEpoch } from '../checkpoint.js';
import { LOGITS } from '../engine/engine.js';
import { forcedProvider, intraOpThreads } from '../engine/index.js';
import { OrtEngine } from '../engine/ort.js';
import { TrainingError } from '../errors.js';
import type { Recipe } from '../recipe.js';
import { learningRate } from '../schedule.js';
import { shuffled, tokenBatch, tokenRows, type TokenLossSpec, type TokenRow } from './token-batch.js';
import { loadLmStudent } from './onnx-lm.js';
import { TOKEN_INPUT, transformerStudent } from './transformer.js';
import { renderLmReport } from './report-lm.js';

export interface LmEvaluation {
  readonly bitsPerByte: number;
  readonly perplexity: number;
  /** Predicted tokens (positions with a next token). */
  readonly tokens: number;
  /** Next-token top-1 agreement with the teacher's argmax, when a teacher cache over the test split is given. */
  readonly agreement?: number;
}

export interface LmEpochMetrics {
  readonly epoch: number;
  readonly lr: number;
  readonly loss: Readonly<Record<string, number>>;
  readonly test?: LmEvaluation;
  readonly seconds: number;
  readonly tokensPerSecond: number;
}

export interface LmRunResult {
  readonly runDir: string;
  readonly engine: { readonly name: 'ort'; readonly device: string };
  readonly parameters: number;
  readonly metrics: readonly LmEpochMetrics[];
  readonly test?: LmEvaluation;
  readonly cache?: { readonly dir: string; readonly storage: string; readonly bytesPerToken: number };
}

export interface LmTrainOptions {
  readonly onEpochEnd?: (m: LmEpochMetrics) => void;
  readonly onBatch?: (blocksDone: number, blocks: number) => void;
  /** A token cache of the teacher over data.test, for top-1 agreement. */
  readonly testCache?: string;
  /** Continue runs/<name> from its last checkpoint (one is written after every epoch). */
  readonly resume?: boolean;
}

const SHUFFLE_BYTES = 256 << 20;

function rowBytes(L: number, V: number, storage: string | undefined): number {
  return L * 4 + (storage === 'dense' ? L * V * 4 : storage === 'topk' ? L * 64 : storage === 'sampled' ? L * 64 : 0);
}

/** The recipe's student as a graph over blocks of L tokens and a vocabulary of V. */
async function studentGraph(recipe: Readonly<Recipe>, L: number, V: number): Promise<Graph> {
  const s = recipe.student;
  if (s.kind === 'transformer') {
    if (s.context !== L) throw new TrainingError(`student.context ${s.context} differs from the dataset's blocks of ${L} tokens`);
    return transformerStudent({ vocab: V, context: L, layers: s.layers, dModel: s.dModel, heads: s.heads, ffn: s.ffn, seed: recipe.seed });
  }
  if (s.kind === 'onnx') return loadLmStudent(s.path, L, V);
  throw new TrainingError(`student.kind ${s.kind} is a classifier; a token dataset trains student: { kind: transformer } or an ONNX language model`);
}

/**
 * Bits per byte, perplexity and agreement on a token dataset of any causal LM: `logits` maps
 * `rows` blocks of token ids ([rows, L], padding fed as 0) to [rows, L, V] logits (a student
 * engine's predict, or a served teacher's tokenLogits).
 */
export async function evaluateLm(
  logits: (ids: Int32Array, rows: number) => Promise<Float32Array>,
  test: TokenDatasetReader,
  batchBlocks: number,
  teacherCache?: LogitCacheReader,
): Promise<LmEvaluation> {
  const L = test.info.block;
  const V = test.info.tokenizer.vocabSize;
  const bytes = test.info.tokenBytes;
  let nll = 0;
  let tokens = 0;
  let byteCount = 0;
  let agree = 0;
  let compared = 0;
  let pending: TokenRow[] = [];
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    const N = pending.length;
    const ids = new Int32Array(N * L);
    pending.forEach((r, i) => r.tokens.forEach((t, j) => (ids[i * L + j] = t < 0 ? 0 : t)));
    const z = await logits(ids, N);
    for (let i = 0; i < N; i++) {
      const row = pending[i]!;
      for (let t = 0; t + 1 < L; t++) {
        const next = row.tokens[t + 1]!;
        if (next < 0 || row.tokens[t]! < 0) continue;
        const off = (i * L + t) * V;
        let max = -Infinity;
        let arg = 0;
        for (let v = 0; v < V; v++) if (z[off + v]! > max) [max, arg] = [z[off + v]!, v];
        let s = 0;
        for (let v = 0; v < V; v++) s += Math.exp(z[off + v]! - max);
        nll += max + Math.log(s) - z[off + next]!;
        tokens++;
        byteCount += bytes[next]!;
        const teacher = row.teacher;
        if (teacher !== undefined) {
          compared++;
          if (teacherArgmax(teacher, t, V) === arg) agree++;
        }
      }
    }
    pending = [];
  };
  for await (const row of tokenRows(test, teacherCache)) {
    pending.push(row);
    if (pending.length === batchBlocks) await flush();
  }
  await flush();
  return {
    bitsPerByte: nll / Math.LN2 / Math.max(1, byteCount),
    perplexity: Math.exp(nll / Math.max(1, tokens)),
    tokens,
    ...(compared > 0 ? { agreement: agree / compared } : {}),
  };
}

function teacherArgmax(t: NonNullable<TokenRow['teacher']>, position: number, V: number): number {
  if (t.kind === 'dense') {
    let best = 0;
    for (let v = 1; v < V; v++) if (t.z[position * V + v]! > t.z[position * V + best]!) best = v;
    return best;
  }
  if (t.kind === 'topk') return t.indices[position * (t.indices.length / t.logsumexp.length)]!;
  let at = 0;
  for (let p = 0; p < position; p++) at += t.unique[p]!;
  let best = -1;
  for (let j = 0; j < t.unique[position]!; j++) if (best < 0 || t.logprobs[at + j]! > t.logprobs[at + best]!) best = j;
  return best < 0 ? -1 : t.indices[at + best]!;
}

export async function trainLanguageModel(recipe: Readonly<Recipe>, options: LmTrainOptions = {}): Promise<LmRunResult> {
  const runDir = join(recipe.out, recipe.name);
  await mkdir(runDir, { recursive: true });
  await rm(join(runDir, 'run.json'), { force: true });
  const resume = options.resume === true ? await findResumePoint(runDir) : undefined;
  if (resume === undefined) await clearRun(runDir);
  const train = await TokenDatasetReader.open(recipe.data.train);
  const test = recipe.data.test === undefined ? undefined : await TokenDatasetReader.open(recipe.data.test);
  const L = train.info.block;
  const V = train.info.tokenizer.vocabSize;
  if (test !== undefined && test.info.tokenizer.sha256 !== train.info.tokenizer.sha256)
    throw new TrainingError(`${recipe.data.test} was tokenized by ${test.info.tokenizer.name}, ${recipe.data.train} by ${train.info.tokenizer.name}`);

  const distill = recipe.distill;
  if (recipe.teachers.length > 1) throw new TrainingError('a language-model student takes one teacher cache');
  const ref = recipe.teachers[0];
  if (ref !== undefined && 'onnx' in ref)
    throw new TrainingError('a language-model teacher runs once, into a token cache (distillate-server precompute); online teachers are for classifiers');
  if (distill.method !== 'scratch' && ref === undefined) throw new TrainingError(`distill.method ${distill.method} needs a teacher cache in teachers`);
  let cache: LogitCacheReader | undefined;
  if (ref !== undefined && distill.method !== 'scratch') {
    cache = await LogitCacheReader.open(await resolveCacheDir(ref, recipe.caches, train));
    const m = cache.manifest;
    if (m.tokens === undefined) throw new TrainingError(`cache ${cache.dir} holds class logits; a language-model student needs a token cache`);
    if (m.dataset.fingerprint !== (await train.fingerprint()))
      throw new TrainingError(`cache ${cache.dir} was built over another dataset than ${recipe.data.train}`);
    if (m.tokens.vocabSize !== V)
      throw new TrainingError(`cache ${cache.dir} has a vocabulary of ${m.tokens.vocabSize}; ${recipe.data.train}'s tokenizer has ${V}`);
    const T = distill.params.temperature;
    if (m.storage.mode === 'sampled' && distill.method !== 'kd')
      throw new TrainingError(
        `cache ${cache.dir} is sampled: only forward KL (distill.method kd) is estimable from samples; ${distill.method} needs the teacher's distribution (a dense cache)`,
      );
    if (m.storage.mode !== 'dense' && T !== m.temperature)
      throw new TrainingError(`cache ${cache.dir} was built at T = ${m.temperature}; set distill.params.temperature to ${m.temperature}`);
    if (m.storage.mode !== 'sampled' && !['kd', 'rkl', 'jsd', 'tvd'].includes(distill.method))
      throw new TrainingError(`distill.method ${distill.method} is not a per-token method; language models take kd, rkl, jsd or tvd`);
  }
  const storage = cache?.manifest.storage.mode;
  const spec: TokenLossSpec = {
    method: distill.method as TokenLossSpec['method'],
    params: distill.method === 'scratch' ? { temperature: 1 } : (distill.params as TokenLossSpec['params']),
    weights: recipe.weights,
    ...(storage === undefined ? {} : { teacher: storage }),
    ...(cache?.manifest.storage.mode === 'sampled' ? { sampledN: cache.manifest.storage.n } : {}),
    L,
    V,
  };

  const graph = await studentGraph(recipe, L, V);
  const provider = forcedProvider(recipe);
  const threads = intraOpThreads(recipe);
  const engine = await OrtEngine.fromGraph(graph, recipe, {
    ...(provider === undefined ? {} : { provider }),
    ...(threads === undefined ? {} : { intraOpThreads: threads }),
  });
  try {
    if (resume !== undefined) await engine.loadCheckpoint(resume.dir);
    const blocks = await train.countRows();
    const testCache = options.testCache === undefined ? undefined : await LogitCacheReader.open(options.testCache);
    const bufferRows = Math.max(recipe.batchSize, Math.min(recipe.shuffleBuffer, Math.floor(SHUFFLE_BYTES / rowBytes(L, V, storage))));
    // Each epoch's order is seeded by (seed, epoch) and the checkpoint holds the weights and the
    // optimizer's state: a resumed run trains the epochs it has left as the uninterrupted run would.
    const metrics: LmEpochMetrics[] = resume === undefined ? [] : await keptMetrics<LmEpochMetrics>(runDir, resume.startEpoch);
    for (let epoch = resume?.startEpoch ?? 1; epoch <= recipe.epochs; epoch++) {
      const lr = learningRate(recipe, epoch);
      const start = performance.now();
      const sums: Record<string, number> = {};
      let steps = 0;
      let done = 0;
      let tokens = 0;
      let rows: TokenRow[] = [];
      const step = async (): Promise<void> => {
        const { batch, loss } = tokenBatch(rows, spec);
        const r = await engine.step(batch, loss, lr, { outputs: false });
        for (const [k, v] of Object.entries(r.terms)) sums[k] = (sums[k] ?? 0) + v;
        steps++;
        done += rows.length;
        for (const row of rows) for (const t of row.tokens) if (t >= 0) tokens++;
        options.onBatch?.(done, blocks);
        rows = [];
      };
      for await (const row of shuffled(tokenRows(train, cache), bufferRows, recipe.seed * 1000 + epoch)) {
        rows.push(row);
        if (rows.length === recipe.batchSize) await step();
      }
      if (rows.length > 0) await step();
      const seconds = (performance.now() - start) / 1000;
      const predict = (ids: Int32Array, rows: number): Promise<Float32Array> =>
        engine.predict({ rows, inputs: { [TOKEN_INPUT]: { data: ids, dims: [rows, L] } } });
      const evaluation = test === undefined ? undefined : await evaluateLm(predict, test, recipe.batchSize, testCache);
      const m: LmEpochMetrics = {
        epoch,
        lr,
        loss: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / Math.max(1, steps)])),
        ...(evaluation === undefined ? {} : { test: evaluation }),
        seconds,
        tokensPerSecond: tokens / seconds,
      };
      metrics.push(m);
      await saveEpoch(runDir, engine, m);
      options.onEpochEnd?.(m);
    }
    const tok = train.info.tokenizer;
    await writeFileAtomic(join(runDir, 'student.onnx'), engine.exportOnnx({ 'distillate.recipe': recipe.name, 'distillate.kind': 'causal-lm' }));
    await writeFileAtomic(
      join(runDir, 'student.json'),
      JSON.stringify(
        { kind: 'causal-lm', tokenizer: tok.name, tokenizerSha256: tok.sha256, context: L, vocabSize: V, input: TOKEN_INPUT, logitsOutput: LOGITS },
        null,
        2,
      ) + '\n',
    );
    const last = metrics.at(-1);
    const result: LmRunResult = {
      runDir,
      engine: { name: 'ort', device: engine.device },
      parameters: engine.parameters,
      metrics,
      ...(last?.test === undefined ? {} : { test: last.test }),
      ...(cache === undefined ? {} : { cache: { dir: cache.dir, storage: storage!, bytesPerToken: cache.manifest.tokens!.bytesPerToken } }),
    };
    await writeFileAtomic(join(runDir, 'recipe.json'), JSON.stringify(recipe, null, 2) + '\n');
    await writeFileAtomic(
      join(runDir, 'report.html'),
      renderLmReport({
        name: recipe.name,
        recipe,
        metrics,
        summary: {
          student: recipe.student.kind,
          parameters: engine.parameters,
          method: distill.method,
          ...(cache === undefined ? {} : { cache: `${cache.dir} (${storage}, ${cache.manifest.tokens!.bytesPerToken} B/token)` }),
          ...(last?.test === undefined ? {} : { 'test bits/byte': last.test.bitsPerByte.toFixed(4), 'test perplexity': last.test.perplexity.toFixed(2) }),
          device: engine.device,
        },
      }),
    );
    await writeFileAtomic(join(runDir, 'run.json'), JSON.stringify(result, null, 2) + '\n');
    return result;
  } finally {
    await engine.release();
  }
}
