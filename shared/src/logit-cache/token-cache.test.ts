/**
 * Token caches through the one writer: several record batches and shards (so recycled batch
 * buffers are exercised), ids in order, top-k entries per position, sampled draws that skip
 * padding and come out the same from a second writer, and the manifest's token count.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../synthetic.js';
import { LogitCacheReader } from './reader.js';
import { LogitCacheWriter } from './writer.js';
import type { StorageInput } from './manifest.js';

const [rows, L, V] = [13, 4, 6];
const rand = mulberry32(3);
const logits = Float32Array.from({ length: rows * L * V }, () => rand() * 8 - 4);
const tokens = Int32Array.from({ length: rows * L }, (_, i) => (i % L === L - 1 && Math.floor(i / L) % 3 === 0 ? -1 : i % V));
const ids = Int32Array.from({ length: rows }, (_, i) => 100 + i);
const tokenizer = { name: 't.json', sha256: 'a'.repeat(64), vocabSize: V };

async function write(storage: StorageInput, root: string) {
  const w = await LogitCacheWriter.open({
    root,
    teacher: { name: 'lm', sha256: 'b'.repeat(64), classes: [] },
    dataset: { fingerprint: 'c'.repeat(64), rows },
    preprocessing: 'tokens',
    temperature: 1,
    storage,
    tokens: { positions: L, vocabSize: V, tokenizer },
    batchRows: 2,
    shardRows: 4,
    fsync: false,
  });
  // rows arrive in uneven pieces
  for (const [s, e] of [
    [0, 3],
    [3, 4],
    [4, 11],
    [11, 13],
  ] as const) {
    await w.append({ ids: ids.subarray(s, e), logits: logits.subarray(s * L * V, e * L * V), tokens: tokens.subarray(s * L, e * L) });
  }
  const manifest = await w.finish();
  return { manifest, reader: await LogitCacheReader.open(join(root, manifest.key)) };
}

describe('token caches', () => {
  it('top-k: ids in order over several batches and shards, each position its own k largest', async () => {
    const { manifest, reader } = await write({ mode: 'topk', k: 2 }, await mkdtemp(join(tmpdir(), 'tok-')));
    expect(manifest.shards.length).toBeGreaterThan(2);
    expect(manifest.tokens).toMatchObject({ positions: L, vocabSize: V, count: [...tokens].filter((t) => t !== -1).length });
    const seen: number[] = [];
    for await (const b of reader.batches()) {
      if (b.kind !== 'topk') throw new Error('top-k expected');
      for (let r = 0; r < b.rows; r++) {
        const row = seen.length;
        seen.push(Number(b.ids[r]));
        for (let p = 0; p < L; p++) {
          const z = Array.from(logits.subarray((row * L + p) * V, (row * L + p + 1) * V));
          const order = z.map((v, i) => [v, i] as const).sort((a, c) => c[0] - a[0]);
          expect([b.indices[(r * L + p) * 2], b.indices[(r * L + p) * 2 + 1]]).toEqual([order[0]![1], order[1]![1]]);
        }
      }
    }
    expect(seen).toEqual(Array.from(ids));
  });

  it('sampled: n draws per position, none at padding, the same bytes from a second writer', async () => {
    const a = await write({ mode: 'sampled', n: 5, seed: 2 }, await mkdtemp(join(tmpdir(), 'tok-')));
    const b = await write({ mode: 'sampled', n: 5, seed: 2 }, await mkdtemp(join(tmpdir(), 'tok-')));
    expect(a.manifest.shards.map((s) => s.sha256)).toEqual(b.manifest.shards.map((s) => s.sha256));
    const seen: number[] = [];
    for await (const batch of a.reader.sampledBatches()) {
      let at = 0;
      for (let r = 0; r < batch.rows; r++) {
        const row = seen.length;
        seen.push(Number(batch.ids[r]));
        for (let p = 0; p < L; p++) {
          const k = batch.unique[r * L + p]!;
          const counts = Array.from(batch.counts.subarray(at, at + k));
          expect(counts.reduce((s, c) => s + c, 0)).toBe(tokens[row * L + p] === -1 ? 0 : 5);
          at += k;
        }
      }
    }
    expect(seen).toEqual(Array.from(ids));
    await expect(a.reader.batches().next()).rejects.toThrow(/sampledBatches/);
  });

  it('refuses sampled storage for a class cache', async () => {
    await expect(
      LogitCacheWriter.open({
        root: await mkdtemp(join(tmpdir(), 'tok-')),
        teacher: { name: 'c', sha256: 'b'.repeat(64), classes: ['x', 'y'] },
        dataset: { fingerprint: 'c'.repeat(64), rows: 1 },
        preprocessing: 'x',
        temperature: 1,
        storage: { mode: 'sampled', n: 4 },
      }),
    ).rejects.toThrow(/sampled storage is for token caches/);
  });
});
