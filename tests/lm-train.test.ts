/**
 * A transformer student trained on the ORT engine from Brown corpus text: from scratch and by KD
 * from the shipped teacher's sampled token cache. Its loss falls, its student.onnx is served by
 * the server like any teacher (bits per byte from the served logits equal the run's own), and
 * what cannot be estimated from samples is refused in one line.
 */
import { copyFile, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LogitCacheWriter, TokenDatasetReader } from '@distillate/shared';
import { OrtSession, TeacherRegistry } from '@distillate/shared/onnx';
import { importText, precomputeLogits } from '@distillate/server';
import { loadLmStudent, parseRecipe, trainLanguageModel } from '@distillate/trainer';
import { readBrownCorpus, splitBrown } from '../scripts/lm/brown.js';
import { REPO } from './helpers/cli.js';

const MODELS = join(REPO, 'models');
const L = 64;
let root: string;
let cacheDir: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-lmtrain-'));
  const docs = await readBrownCorpus();
  const part = splitBrown(docs);
  const pick = (p: string, n: number) => docs.filter((d) => part.get(d.name) === p).slice(0, n);
  for (const [name, list] of [
    ['train', pick('train', 12)],
    ['test', pick('test', 3)],
  ] as const) {
    await writeFile(join(root, `${name}.jsonl`), list.map((d) => JSON.stringify({ doc: d.name, text: d.text.slice(0, 4000) })).join('\n') + '\n');
    await importText({
      source: join(root, `${name}.jsonl`),
      out: join(root, `${name}.arrow`),
      tokenizer: join(MODELS, 'brown-lm.tokenizer.json'),
      block: L,
      key: 'doc',
    });
  }
  const teacher = (await TeacherRegistry.open(MODELS)).get('brown-lm');
  const r = await precomputeLogits({
    teacher,
    datasetPath: join(root, 'train.arrow'),
    cacheRoot: join(root, 'cache'),
    request: { type: 'precompute', temperature: 1, storage: { mode: 'sampled', n: 16, seed: 1 }, batchSize: 256 },
  });
  cacheDir = join(root, 'cache', r.key);
}, 120_000);

const recipe = (name: string, extra: Record<string, unknown>) =>
  parseRecipe({
    name,
    out: join(root, 'runs'),
    data: { train: join(root, 'train.arrow'), test: join(root, 'test.arrow') },
    student: { kind: 'transformer', layers: 1, dModel: 32, heads: 2, ffn: 64, context: L },
    optimizer: { kind: 'adam', lr: 0.003 },
    epochs: 3,
    batchSize: 16,
    seed: 1,
    ...extra,
  });

describe('language-model students on the ORT engine', () => {
  it('from scratch and by KD from a sampled cache: the loss falls; student.onnx served as a teacher gives the run’s bits per byte', async () => {
    const scratch = await trainLanguageModel(recipe('scratch', {}));
    const ce = scratch.metrics.map((m) => m.loss['ce']!);
    expect(ce[2]!).toBeLessThan(ce[0]!);
    const bpb = scratch.metrics.map((m) => m.test!.bitsPerByte);
    expect(bpb[2]!).toBeLessThan(bpb[0]!);
    expect(scratch.test!.bitsPerByte).toBeGreaterThan(0.5);

    const kd = await trainLanguageModel(recipe('kd', { teachers: [{ cache: cacheDir }], distill: { method: 'kd', params: { temperature: 1 } } }));
    expect(kd.metrics[2]!.loss['kd']!).toBeLessThan(kd.metrics[0]!.loss['kd']!);
    expect(kd.cache).toMatchObject({ storage: 'sampled' });

    // The student, served like any teacher: its logits give the bits per byte the run reported.
    const models = join(root, 'served');
    await mkdir(models, { recursive: true });
    await copyFile(join(scratch.runDir, 'student.onnx'), join(models, 'tiny.onnx'));
    await copyFile(join(scratch.runDir, 'student.json'), join(models, 'tiny.json'));
    const served = (await TeacherRegistry.open(models)).get('tiny');
    const test = await TokenDatasetReader.open(join(root, 'test.arrow'));
    const V = test.info.tokenizer.vocabSize;
    let nll = 0;
    let bytes = 0;
    for await (const b of test.batches()) {
      const z = await served.tokenLogits(b.tokens.slice(), b.rows, L);
      for (let r = 0; r < b.rows; r++)
        for (let t = 0; t + 1 < L; t++) {
          const next = b.tokens[r * L + t + 1]!;
          if (next < 0) continue;
          const row = z.subarray((r * L + t) * V, (r * L + t + 1) * V);
          const max = Math.max(...row);
          nll += max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) - row[next]!;
          bytes += test.info.tokenBytes[next]!;
        }
    }
    expect(nll / Math.LN2 / bytes).toBeCloseTo(scratch.test!.bitsPerByte, 4);
    expect(JSON.parse(await readFile(join(scratch.runDir, 'run.json'), 'utf8'))).toMatchObject({ parameters: scratch.parameters });
    const report = await readFile(join(kd.runDir, 'report.html'), 'utf8');
    expect(report).toContain('test bits per byte');
    expect((report.match(/<svg/g) ?? []).length).toBe(2);
  }, 300_000);

  it('resumes after a crash (an injected fault after epoch 1): epochs 2 and 3 as an uninterrupted run trains them', async () => {
    const kd = { teachers: [{ cache: cacheDir }], distill: { method: 'kd', params: { temperature: 1 } } };
    const straight = await trainLanguageModel(recipe('lm-straight', kd));
    const crash = new Error('injected: the process dies after epoch 1');
    const onEpochEnd = (m: { epoch: number }): void => {
      if (m.epoch === 1) throw crash;
    };
    await expect(trainLanguageModel(recipe('lm-resumed', kd), { onEpochEnd })).rejects.toBe(crash);
    const resumed = await trainLanguageModel(recipe('lm-resumed', kd), { resume: true });
    expect(resumed.metrics.map((m) => m.epoch)).toEqual([1, 2, 3]);
    for (const e of [1, 2]) {
      expect(resumed.metrics[e]!.loss['total']).toBeCloseTo(straight.metrics[e]!.loss['total']!, 6);
      expect(resumed.metrics[e]!.test!.bitsPerByte).toBeCloseTo(straight.metrics[e]!.test!.bitsPerByte, 6);
    }
    const lines = (await readFile(join(resumed.runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { epoch: number }).epoch)).toEqual([1, 2, 3]);
    await expect(trainLanguageModel(recipe('lm-never-run', kd), { resume: true })).rejects.toThrow(/--resume: .*lm-never-run has no checkpoint/);
  }, 300_000);

  it('trains a GPT exported by torch.onnx.export (int64 ids, shape arithmetic, a masked_fill mask) as student: { kind: onnx }', async () => {
    const path = join(REPO, 'tests/fixtures/torch-lm.onnx');
    // The graph the trainer makes of the file computes what the file computes.
    const folded = await loadLmStudent(path, L, 1024);
    expect(folded.nodes.some((n) => ['Shape', 'Range', 'Slice', 'Unsqueeze', 'Concat', 'Not'].includes(n.op))).toBe(false);
    const ids = Int32Array.from({ length: 2 * L }, (_, i) => (i * 37) % 1024);
    const [mine, theirs] = await Promise.all([
      OrtSession.create(folded.toBytes(), { provider: 'cpu' }),
      OrtSession.create(await readFile(path), { provider: 'cpu' }),
    ]);
    const a = (await mine.runMany({ input_ids: { data: ids, dims: [2, L] } }, ['logits']))['logits']!;
    const b = (await theirs.runMany({ input_ids: { data: BigInt64Array.from(ids, BigInt), dims: [2, L] } }, ['logits']))['logits']!;
    await Promise.all([mine.release(), theirs.release()]);
    expect(a.length).toBe(2 * L * 1024);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
    expect(worst).toBeLessThan(1e-4);

    const r = await trainLanguageModel(
      recipe('torch', { student: { kind: 'onnx', path }, teachers: [{ cache: cacheDir }], distill: { method: 'kd', params: { temperature: 1 } } }),
    );
    // 2 layers of d 64 and a tied 1,024 × 64 embedding, as export_torch_lm.py builds it.
    expect(r.parameters).toBe(169_728);
    expect(r.metrics[2]!.loss['kd']!).toBeLessThan(r.metrics[0]!.loss['kd']!);
    expect(r.metrics[2]!.test!.bitsPerByte).toBeLessThan(r.metrics[0]!.test!.bitsPerByte);
    // Its student.onnx takes the trainer's int32 ids and is served like any teacher.
    const models = join(root, 'served-torch');
    await mkdir(models, { recursive: true });
    await copyFile(join(r.runDir, 'student.onnx'), join(models, 'gpt.onnx'));
    await copyFile(join(r.runDir, 'student.json'), join(models, 'gpt.json'));
    const z = await (await TeacherRegistry.open(models)).get('gpt').tokenLogits(ids, 2, L);
    expect(z.every(Number.isFinite)).toBe(true);
  }, 300_000);

  it('reverse KL and JSD from a top-k cache (its k + 1 buckets), reverse KL from a dense one: the term falls', async () => {
    const teacher = (await TeacherRegistry.open(MODELS)).get('brown-lm');
    const r = await precomputeLogits({
      teacher,
      datasetPath: join(root, 'train.arrow'),
      cacheRoot: join(root, 'cache'),
      request: { type: 'precompute', temperature: 1, storage: { mode: 'topk', k: 8, dtype: 'float16' }, batchSize: 256 },
    });
    for (const [method, params] of [
      ['rkl', { temperature: 1 }],
      ['jsd', { beta: 0.5, temperature: 1 }],
    ] as const) {
      const run = await trainLanguageModel(recipe(`topk-${method}`, { teachers: [{ cache: join(root, 'cache', r.key) }], distill: { method, params } }));
      expect(run.cache).toMatchObject({ storage: 'topk' });
      expect(run.metrics[2]!.loss['kd']!, method).toBeLessThan(run.metrics[0]!.loss['kd']!);
      expect(run.metrics[2]!.loss['kd']!, method).toBeGreaterThan(0);
    }
    // And from a dense cache (the method gets the whole distribution and the one-hot target).
    const dense = await precomputeLogits({
      teacher,
      datasetPath: join(root, 'train.arrow'),
      cacheRoot: join(root, 'cache'),
      request: { type: 'precompute', temperature: 1, storage: { mode: 'dense', dtype: 'float16' }, batchSize: 256 },
    });
    const run = await trainLanguageModel(
      recipe('dense-rkl', { teachers: [{ cache: join(root, 'cache', dense.key) }], distill: { method: 'rkl', params: { temperature: 1 } } }),
    );
    expect(run.cache).toMatchObject({ storage: 'dense' });
    expect(run.metrics[2]!.loss['kd']!).toBeLessThan(run.metrics[0]!.loss['kd']!);
  }, 300_000);

  it('refuses in one line what a sampled cache cannot estimate, a classifier student, and a cache of another vocabulary', async () => {
    await expect(
      trainLanguageModel(recipe('rkl', { teachers: [{ cache: cacheDir }], distill: { method: 'rkl', params: { temperature: 1 } } })),
    ).rejects.toThrow(/is sampled: only forward KL \(distill.method kd\) is estimable from samples; rkl needs the teacher's distribution/);
    await expect(trainLanguageModel(recipe('mlp', { student: { kind: 'mlp' } }))).rejects.toThrow(/student.kind mlp is a classifier/);
    // A token cache over this very dataset whose vocabulary is not the student's (512 logits per position, the tokenizer has 1,024).
    const train = await TokenDatasetReader.open(join(root, 'train.arrow'));
    const rows = await train.countRows();
    const w = await LogitCacheWriter.open({
      root: join(root, 'cache-512'),
      teacher: { name: 'other-lm', sha256: 'e'.repeat(64), classes: [] },
      dataset: { fingerprint: await train.fingerprint(), rows },
      preprocessing: 'tokens',
      temperature: 1,
      storage: { mode: 'sampled', n: 4, seed: 1 },
      tokens: { positions: L, vocabSize: 512, tokenizer: { ...train.info.tokenizer, vocabSize: 512 } },
      fsync: false,
    });
    for await (const b of train.batches())
      await w.append({
        ids: b.ids,
        logits: Float32Array.from({ length: b.rows * L * 512 }, (_, i) => Math.sin(i)),
        tokens: b.tokens.map((t) => Math.min(t, 511)),
      });
    const manifest = await w.finish();
    await expect(
      trainLanguageModel(
        recipe('v512', { teachers: [{ cache: join(root, 'cache-512', manifest.key) }], distill: { method: 'kd', params: { temperature: 1 } } }),
      ),
    ).rejects.toThrow(/has a vocabulary of 512; .*train\.arrow's tokenizer has 1024/);
  }, 60_000);
});
