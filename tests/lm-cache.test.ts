/**
 * Token caches from the shipped language-model teacher (models/brown-lm) over documents of the
 * Brown corpus's test split: top-k entries are the teacher's own logits, the logsumexp is exact,
 * sampled draws are deterministic and follow the teacher's distribution (a chi-square test over
 * 1,000 positions, shown able to fail), and mismatches are refused in one line before any
 * teacher runs.
 */
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LogitCacheReader, TokenDatasetReader, type CacheManifest } from '@distillate/shared';
import { TeacherRegistry, type Teacher } from '@distillate/shared/onnx';
import { importText, precomputeLogits, type PrecomputeOptions } from '@distillate/server';
import { readBrownCorpus, splitBrown } from '../scripts/lm/brown.js';
import { REPO, runTs } from './helpers/cli.js';

const MODELS = join(REPO, 'models');
const TOKENIZER = join(MODELS, 'brown-lm.tokenizer.json');
const L = 64;

let root: string;
let teacher: Teacher;
let dataset: string;

async function precompute(
  storage: PrecomputeOptions['request']['storage'],
  cacheRoot = join(root, 'cache'),
  temperature = 1,
): Promise<{ dir: string; manifest: CacheManifest }> {
  const r = await precomputeLogits({
    teacher,
    datasetPath: dataset,
    cacheRoot,
    request: { type: 'precompute', temperature, storage, batchSize: 256 },
  });
  const dir = join(cacheRoot, r.key);
  return { dir, manifest: JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as CacheManifest };
}

/** The teacher's logits for every block of the dataset, [rows, L, V], straight from the model. */
async function teacherLogits(): Promise<{ z: Float32Array; tokens: Int32Array; V: number }> {
  const r = await TokenDatasetReader.open(dataset);
  const parts: Float32Array[] = [];
  const toks: Int32Array[] = [];
  for await (const b of r.batches()) {
    parts.push(await teacher.tokenLogits(b.tokens.slice(), b.rows, L));
    toks.push(b.tokens.slice());
  }
  const V = r.info.tokenizer.vocabSize;
  const z = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) z.set(p, (at += p.length) - p.length);
  const tokens = new Int32Array(toks.reduce((s, p) => s + p.length, 0));
  at = 0;
  for (const p of toks) tokens.set(p, (at += p.length) - p.length);
  return { z, tokens, V };
}

function logSoftmaxRow(z: Float32Array, T = 1): Float64Array {
  let max = -Infinity;
  for (const v of z) max = Math.max(max, v / T);
  let s = 0;
  for (const v of z) s += Math.exp(v / T - max);
  const lse = max + Math.log(s);
  return Float64Array.from(z, (v) => v / T - lse);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-lm-'));
  const docs = await readBrownCorpus();
  const part = splitBrown(docs);
  const test = docs.filter((d) => part.get(d.name) === 'test').slice(0, 3);
  await writeFile(join(root, 'test.jsonl'), test.map((d) => JSON.stringify({ doc: d.name, text: d.text.slice(0, 3000) })).join('\n') + '\n');
  await importText({ source: join(root, 'test.jsonl'), out: join(root, 'test.arrow'), tokenizer: TOKENIZER, block: L, key: 'doc' });
  dataset = join(root, 'test.arrow');
  teacher = (await TeacherRegistry.open(MODELS)).get('brown-lm');
}, 60_000);

describe('token caches from the shipped language-model teacher', () => {
  it("top-k: the kept entries are the teacher's k largest logits (float32 within 1e-6, float16 within 1e-3, relative) and the logsumexp is exact", async () => {
    const { z, V } = await teacherLogits();
    for (const dtype of ['float32', 'float16'] as const) {
      const tol = dtype === 'float32' ? 1e-6 : 1e-3;
      const { dir, manifest } = await precompute({ mode: 'topk', k: 8, dtype });
      expect(manifest.tokens).toMatchObject({ positions: L, vocabSize: V });
      let pos = 0;
      for await (const b of (await LogitCacheReader.open(dir)).batches()) {
        if (b.kind !== 'topk') throw new Error('expected a top-k batch');
        for (let p = 0; p < b.rows * L; p++, pos++) {
          const row = z.subarray(pos * V, (pos + 1) * V);
          const sorted = Array.from(row).sort((a, c) => c - a);
          for (let j = 0; j < 8; j++) {
            const i = b.indices[p * 8 + j]!;
            expect(Math.abs(b.logits[p * 8 + j]! - row[i]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(row[i]!)));
            expect(Math.abs(row[i]! - sorted[j]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(sorted[j]!)));
          }
          const lse = -logSoftmaxRow(row)[0]! + row[0]!;
          expect(Math.abs(b.logsumexp[p]! - lse)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(lse)));
        }
      }
      expect(pos * V).toBe(z.length);
      if (dtype === 'float16') expect(manifest.tokens!.bytesPerToken).toBeLessThanOrEqual(50); // the storage target for top-8
    }
  }, 120_000);

  it('sampled: the same bytes from two runs, and counts that follow softmax(z / T) by a chi-square test at 1 % over 1,000 positions', async () => {
    const n = 255;
    const T = 1;
    const a = await precompute({ mode: 'sampled', n, seed: 5 }, join(root, 'cache-a'), T);
    const b = await precompute({ mode: 'sampled', n, seed: 5 }, join(root, 'cache-b'), T);
    expect(a.manifest.shards.map((s) => s.sha256)).toEqual(b.manifest.shards.map((s) => s.sha256));
    const other = await precompute({ mode: 'sampled', n, seed: 6 }, join(root, 'cache-c'), T);
    expect(other.manifest.key).not.toBe(a.manifest.key);
    expect(other.manifest.shards[0]!.sha256).not.toBe(a.manifest.shards[0]!.sha256);

    const { z, tokens, V } = await teacherLogits();
    /** Pearson's statistic over positions: bins with n·p ≥ 5 one by one, the rest pooled; Wilson–Hilferty z-score. */
    const chiSquare = async (pTemperature: number): Promise<{ z: number; positions: number }> => {
      let x2 = 0;
      let df = 0;
      let positions = 0;
      let pos = 0;
      for await (const batch of (await LogitCacheReader.open(a.dir)).sampledBatches()) {
        let at = 0;
        for (let p = 0; p < batch.rows * L; p++, pos++) {
          const k = batch.unique[p]!;
          if (tokens[pos] === -1) {
            expect(k).toBe(0);
            continue;
          }
          const observed = new Map<number, number>();
          let drawn = 0;
          for (let j = 0; j < k; j++) {
            observed.set(batch.indices[at + j]!, batch.counts[at + j]!);
            drawn += batch.counts[at + j]!;
          }
          expect(drawn).toBe(n);
          const logp = logSoftmaxRow(z.subarray(pos * V, (pos + 1) * V), pTemperature);
          if (pTemperature === T) {
            for (let j = 0; j < k; j++) expect(Math.abs(batch.logprobs[at + j]! - logp[batch.indices[at + j]!]!)).toBeLessThan(2e-2);
          }
          at += k;
          if (positions >= 1000) continue;
          // Bins: each id with n·p ≥ 5, and the rest pooled (folded into the smallest bin when its n·p < 5).
          const bins: { o: number; e: number }[] = [];
          const rest = { o: n, e: n };
          for (let i = 0; i < V; i++) {
            const e = n * Math.exp(logp[i]!);
            if (e < 5) continue;
            const o = observed.get(i) ?? 0;
            bins.push({ o, e });
            rest.o -= o;
            rest.e -= e;
          }
          if (rest.e >= 5 || bins.length === 0) bins.push(rest);
          else {
            const smallest = bins.reduce((m, x) => (x.e < m.e ? x : m));
            smallest.o += rest.o;
            smallest.e += rest.e;
          }
          if (bins.length < 2) continue;
          positions++;
          for (const { o, e } of bins) x2 += (o - e) ** 2 / e;
          df += bins.length - 1;
        }
      }
      const zScore = (Math.cbrt(x2 / df) - (1 - 2 / (9 * df))) / Math.sqrt(2 / (9 * df));
      return { z: zScore, positions };
    };
    const fit = await chiSquare(T);
    expect(fit.positions).toBe(1000);
    expect(fit.z).toBeLessThan(2.326); // one-sided 1 %
    // The test has power: the same counts against a slightly flatter distribution fail it.
    expect((await chiSquare(1.15)).z).toBeGreaterThan(2.326);
  }, 180_000);

  it('dense float16 holds every position; a block past padding is stored but counted out of the bytes per token', async () => {
    const { dir, manifest } = await precompute({ mode: 'dense', dtype: 'float16' });
    const r = await TokenDatasetReader.open(dataset);
    let nonPad = 0;
    for await (const b of r.batches()) for (const t of b.tokens) if (t !== -1) nonPad++;
    expect(manifest.tokens!.count).toBe(nonPad);
    const bytes = manifest.shards.reduce((s, x) => s + x.bytes, 0);
    expect(manifest.tokens!.bytesPerToken).toBeCloseTo(bytes / nonPad, 1);
    let rows = 0;
    for await (const b of (await LogitCacheReader.open(dir)).batches()) rows += b.rows;
    expect(rows).toBe(await r.countRows());
  }, 60_000);

  it('refuses in one line, before any teacher runs: another tokenizer, a block longer than the context', async () => {
    const data = join(root, 'data');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(data, { recursive: true });
    await importText({ source: join(root, 'test.jsonl'), out: join(data, 'bytes.arrow'), tokenizer: 'byte', block: L, key: 'doc' });
    await importText({ source: join(root, 'test.jsonl'), out: join(data, 'long.arrow'), tokenizer: TOKENIZER, block: 256, key: 'doc' });
    const cli = (ds: string, ...extra: string[]) =>
      runTs('server/src/bin.ts', [
        'precompute',
        '--teacher',
        'brown-lm',
        '--dataset',
        ds,
        '--models',
        MODELS,
        '--data',
        data,
        '--cache',
        join(root, 'refused'),
        ...extra,
      ]);
    const tok = cli('bytes.arrow');
    expect(tok.status).not.toBe(0);
    expect(tok.stderr.trim().split('\n')).toHaveLength(1);
    expect(tok.stderr).toMatch(/tokenized by byte .* but teacher brown-lm reads brown-lm\.tokenizer\.json/);
    const long = cli('long.arrow');
    expect(long.stderr.trim().split('\n')).toHaveLength(1);
    expect(long.stderr).toMatch(/blocks of 256 tokens, longer than teacher brown-lm's context of 128/);
    // nothing written but the job store's own folder
    expect((await readdir(join(root, 'refused')).catch(() => [])).filter((f) => !f.startsWith('.'))).toEqual([]);
  }, 60_000);
});
