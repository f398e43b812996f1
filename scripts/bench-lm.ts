/**
 * npm run bench:lm [-- --pairs 3]
 *
 * Language-model speed against PyTorch 2.x CPU (the bench's python3, from pip; scripts/bench/
 * torch_lm.py), measured in turns so the VM's drift cancels in each pair's ratio:
 *  - precompute: Distillate's precompute job of models/brown-lm over the Brown test documents
 *    (240k tokens; reading blocks, the teacher on ORT, sampling 8 draws per position, writing the
 *    cache), in teacher tokens/s, against the same architecture's bare PyTorch forward
 *    (inference_mode, batches of 32 blocks), and the teacher's bare ORT forward alone;
 *  - training: the transformer student (2 layers, d 96, 4 heads, FFN 256, context 128) trained
 *    on the ORT engine through trainLanguageModel (data path included) by CE + KD from a sampled
 *    cache, in tokens/s, against PyTorch with Adam(fused=True) on the same model and loss.
 *  - memory: the trainer's peak RSS training one epoch (KD from a sampled cache) over about 1×
 *    and 10× the tokens (40 and all 396 training documents), each in a fresh process, with the
 *    default shuffle buffer (8,192 blocks, more than the 1× corpus holds) and with 512 blocks.
 * Prints each pair and the median ratio with its range.
 */
import { mkdir, rm } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { TokenDatasetReader, runCli } from '@distillate/shared';
import { TeacherRegistry } from '@distillate/shared/onnx';
import { importText, precomputeLogits } from '@distillate/server';
import { parseRecipe, trainLanguageModel } from '@distillate/trainer';
import { readBrownCorpus, splitBrown } from './lm/brown.js';
import { ROOT } from './experiments/runner.js';
import { childPeakRssMb, printPeakRssKb } from './bench/peak-rss.js';

function torch(spec: Record<string, unknown>): number {
  const r = spawnSync('python3', [join(ROOT, 'scripts', 'bench', 'torch_lm.py'), JSON.stringify(spec)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`torch peer failed: ${r.stderr.trim().split('\n').at(-1)}`);
  return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { tokens_per_s: number }).tokens_per_s;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

const STUDENT = { kind: 'transformer', layers: 2, dModel: 96, heads: 4, ffn: 256, context: 128 } as const;

/** In a child process: one epoch of KD from `cache` over `train`, then this process's peak RSS. */
async function childTrain(spec: string): Promise<void> {
  const [train, cache, buffer, out] = spec.split(',') as [string, string, string, string];
  await trainLanguageModel(
    parseRecipe({
      name: 'rss',
      out,
      data: { train },
      teachers: [{ cache }],
      distill: { method: 'kd', params: { temperature: 1 } },
      student: STUDENT,
      optimizer: { kind: 'adam', lr: 0.003 },
      epochs: 1,
      batchSize: 32,
      shuffleBuffer: Number(buffer),
    }),
  );
  await printPeakRssKb();
}

/** Peak RSS of one epoch over about 1× and 10× the tokens, in fresh processes, at two shuffle buffers. */
async function memory(work: string, docs: Awaited<ReturnType<typeof readBrownCorpus>>, part: Map<string, string>, runs: number): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  const tokenizer = join(ROOT, 'models', 'brown-lm.tokenizer.json');
  const teacher = (await TeacherRegistry.open(join(ROOT, 'models'))).get('brown-lm');
  const train = docs.filter((d) => part.get(d.name) === 'train');
  const sets: { name: string; data: string; cache: string; tokens: number }[] = [];
  for (const [name, list] of [
    ['1x', train.slice(0, 40)],
    ['10x', train],
  ] as const) {
    await writeFile(join(work, `rss-${name}.jsonl`), list.map((d) => JSON.stringify({ doc: d.name, text: d.text })).join('\n') + '\n');
    const report = await importText({ source: join(work, `rss-${name}.jsonl`), out: join(work, `rss-${name}.arrow`), tokenizer, block: 128, key: 'doc' });
    const r = await precomputeLogits({
      teacher,
      datasetPath: join(work, `rss-${name}.arrow`),
      cacheRoot: join(work, 'cache-rss'),
      request: { type: 'precompute', temperature: 1, storage: { mode: 'sampled', n: 8, seed: 1 }, batchSize: 256 },
    });
    sets.push({ name, data: join(work, `rss-${name}.arrow`), cache: join(work, 'cache-rss', r.key), tokens: report.parts[0]!.tokens });
  }
  await teacher.release();
  for (const buffer of [8192, 512]) {
    const peak: Record<string, number[]> = { '1x': [], '10x': [] };
    for (let i = 0; i < runs; i++)
      for (const s of sets)
        peak[s.name]!.push(childPeakRssMb(import.meta.filename, ['--child-train', [s.data, s.cache, buffer, join(work, 'runs-rss')].join(',')]));
    const [one, ten] = [median(peak['1x']!), median(peak['10x']!)];
    console.log(
      `trainer peak RSS, shuffle buffer ${buffer} blocks: ${one.toFixed(0)} MB over ${sets[0]!.tokens} tokens, ${ten.toFixed(0)} MB over ${sets[1]!.tokens} (${(sets[1]!.tokens / sets[0]!.tokens).toFixed(1)}×): ` +
        `${(ten / one).toFixed(3)}× (median of ${runs} fresh processes each)`,
    );
  }
}

async function main(o: { pairs: number; childTrain?: string; only?: string }): Promise<void> {
  if (o.childTrain !== undefined) return childTrain(o.childTrain);
  const work = join(ROOT, '.bench', 'lm');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const docs = await readBrownCorpus();
  const part = splitBrown(docs);
  const { writeFile } = await import('node:fs/promises');
  const test = docs.filter((d) => part.get(d.name) === 'test');
  await writeFile(join(work, 'test.jsonl'), test.map((d) => JSON.stringify({ doc: d.name, text: d.text })).join('\n') + '\n');
  const tokenizer = join(ROOT, 'models', 'brown-lm.tokenizer.json');
  await importText({ source: join(work, 'test.jsonl'), out: join(work, 'test.arrow'), tokenizer, block: 128, key: 'doc' });
  // The student's data: 24 training documents (about 700 blocks) and their sampled cache.
  const small = docs.filter((d) => part.get(d.name) === 'train').slice(0, 24);
  await writeFile(join(work, 'train.jsonl'), small.map((d) => JSON.stringify({ doc: d.name, text: d.text })).join('\n') + '\n');
  await importText({ source: join(work, 'train.jsonl'), out: join(work, 'train.arrow'), tokenizer, block: 128, key: 'doc' });
  const teacher = (await TeacherRegistry.open(join(ROOT, 'models'))).get('brown-lm');
  const trainCache = await precomputeLogits({
    teacher,
    datasetPath: join(work, 'train.arrow'),
    cacheRoot: join(work, 'cache-train'),
    request: { type: 'precompute', temperature: 1, storage: { mode: 'sampled', n: 8, seed: 1 }, batchSize: 256 },
  });
  const reader = await TokenDatasetReader.open(join(work, 'test.arrow'));
  let tokens = 0;
  for await (const b of reader.batches()) for (const t of b.tokens) if (t >= 0) tokens++;
  const blocks = await reader.countRows();
  if (o.only === 'memory') return memory(work, docs, part, 3);

  const rows: Record<string, number[]> = { torchForward: [], ortForward: [], precompute: [], torchTrain: [], ortTrain: [] };
  for (let pair = 1; pair <= o.pairs; pair++) {
    rows['torchForward']!.push(torch({ mode: 'forward', runs: 3, calls: 8 }));
    // The teacher's bare ORT forward, batches of 32 blocks (as the precompute job calls it).
    let t0 = performance.now();
    let fed = 0;
    for await (const b of reader.batches()) {
      for (let r = 0; r + 32 <= b.rows && fed < 256 * 128; r += 32) {
        await teacher.tokenLogits(b.tokens.slice(r * 128, (r + 32) * 128), 32, 128);
        fed += 32 * 128;
      }
    }
    rows['ortForward']!.push(fed / ((performance.now() - t0) / 1000));
    await rm(join(work, 'cache'), { recursive: true, force: true });
    t0 = performance.now();
    await precomputeLogits({
      teacher,
      datasetPath: join(work, 'test.arrow'),
      cacheRoot: join(work, 'cache'),
      request: { type: 'precompute', temperature: 1, storage: { mode: 'sampled', n: 8, seed: 1 }, batchSize: 256 },
    });
    rows['precompute']!.push(tokens / ((performance.now() - t0) / 1000));
    rows['torchTrain']!.push(torch({ mode: 'train', runs: 3, steps: 10 }));
    const r = await trainLanguageModel(
      parseRecipe({
        name: `bench-${pair}`,
        out: join(work, 'runs'),
        data: { train: join(work, 'train.arrow') },
        teachers: [{ cache: join(work, 'cache-train', trainCache.key) }],
        distill: { method: 'kd', params: { temperature: 1 } },
        student: STUDENT,
        optimizer: { kind: 'adam', lr: 0.003 },
        epochs: 1,
        batchSize: 32,
      }),
    );
    rows['ortTrain']!.push(r.metrics[0]!.tokensPerSecond);
    console.log(
      `pair ${pair}: forward torch ${Math.round(rows['torchForward']!.at(-1)!)} / ORT ${Math.round(rows['ortForward']!.at(-1)!)} / precompute job ${Math.round(rows['precompute']!.at(-1)!)} tokens/s; ` +
        `training torch fused Adam ${Math.round(rows['torchTrain']!.at(-1)!)} / ORT engine ${Math.round(rows['ortTrain']!.at(-1)!)} tokens/s`,
    );
  }
  await teacher.release();
  const ratio = (a: string, b: string): string => {
    const q = rows[a]!.map((v, i) => v / rows[b]![i]!);
    return `${median(q).toFixed(2)}× (${Math.min(...q).toFixed(2)}–${Math.max(...q).toFixed(2)}, ${q.length} pairs)`;
  };
  console.log(`${blocks} blocks, ${tokens} tokens in the precompute job`);
  console.log(`precompute job (ORT, sampled n = 8) vs bare PyTorch forward: ${ratio('precompute', 'torchForward')}`);
  console.log(`bare ORT forward vs bare PyTorch forward: ${ratio('ortForward', 'torchForward')}`);
  console.log(`student training, ORT engine vs PyTorch Adam(fused=True): ${ratio('ortTrain', 'torchTrain')}`);
  await memory(work, docs, part, 3);
}

const program = new Command('bench-lm')
  .description('language-model precompute and student training against PyTorch, in turns')
  .option(
    '--pairs <n>',
    'interleaved pairs',
    (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer');
      return n;
    },
    3,
  )
  .option('--only <part>', 'memory: only the peak-RSS part')
  .option('--child-train <train,cache,buffer,out>', '(internal) one epoch, then print peak RSS in kB')
  .action(main);
await runCli(program);
