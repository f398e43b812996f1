/** The labelled/pool split: per-class labelled rows, the rest unlabelled or (a held-out split) kept labelled. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetReader } from './dataset.js';
import { splitLabelled, splitStratified } from './subset.js';
import { DatasetWriter } from './dataset.js';
import { writeSyntheticDataset } from './synthetic.js';

async function rowsOf(path: string): Promise<{ ids: number[]; labels: number[] }> {
  const ids: number[] = [];
  const labels: number[] = [];
  for await (const b of await DatasetReader.open(path)) {
    for (let r = 0; r < b.rows; r++) {
      ids.push(Number(b.ids[r]));
      labels.push(b.labels[r]!);
    }
  }
  return { ids, labels };
}

describe('splitLabelled', () => {
  it('takes the first perClass rows of each class; the pool loses its labels unless keepPoolLabels', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-subset-'));
    const src = join(dir, 'all.arrow');
    await writeSyntheticDataset(src, { rows: 300, classes: 3, batchRows: 70 });
    const all = await rowsOf(src);
    const a = await splitLabelled(src, { perClass: 10, labelled: join(dir, 'l.arrow'), pool: join(dir, 'p.arrow') });
    const b = await splitLabelled(src, { perClass: 10, labelled: join(dir, 'l2.arrow'), pool: join(dir, 'p2.arrow'), keepPoolLabels: true });
    expect(a.labelled.rows).toBe(30);
    expect(a.pool.rows).toBe(270);
    expect(b.labelled.fingerprint).toBe(a.labelled.fingerprint);
    const labelled = await rowsOf(a.labelled.path);
    for (let c = 0; c < 3; c++) expect(labelled.labels.filter((y) => y === c)).toHaveLength(10);
    const pool = await rowsOf(a.pool.path);
    expect(pool.labels.every((y) => y === -1)).toBe(true);
    const kept = await rowsOf(b.pool.path);
    expect(kept.ids).toEqual(pool.ids);
    // The held-out split keeps every pool row's own label.
    const labelOf = new Map(all.ids.map((id, i) => [id, all.labels[i]!]));
    expect(kept.labels).toEqual(kept.ids.map((id) => labelOf.get(id)));
    expect([...labelled.ids, ...pool.ids].sort((x, y) => x - y)).toEqual([...all.ids].sort((x, y) => x - y));
  });
});

describe('stratified split', () => {
  it('puts the fraction of every class (and of the unlabelled rows) in each part, by seed, with sources carried along', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'distillate-strat-'));
    const src = join(dir, 'src.arrow');
    const w = DatasetWriter.create(
      src,
      { inputShape: [1], layout: 'flat', scaling: { scale: 1, offset: 0 }, classes: ['a', 'b', 'c'], inputType: 'float32' },
      { source: true },
    );
    const labels = Int32Array.from({ length: 300 }, (_, i) => (i % 10 === 9 ? -1 : i % 3));
    for (let start = 0; start < 300; start += 64) {
      const n = Math.min(64, 300 - start);
      const ids = Int32Array.from({ length: n }, (_, i) => start + i);
      await w.append({ ids, inputs: Float32Array.from(ids), labels: labels.slice(start, start + n), sources: Array.from(ids, (i) => `f${i}.png`) });
    }
    await w.close();
    const split = (seed: number, tag: string) =>
      splitStratified(src, {
        parts: { test: { fraction: 0.2, path: join(dir, `${tag}-test.arrow`) }, val: { fraction: 0.1, path: join(dir, `${tag}-val.arrow`) } },
        rest: join(dir, `${tag}-train.arrow`),
        seed,
      });
    const s = await split(7, 'a');
    const parts = { test: await rowsOf(s.parts['test']!.path), val: await rowsOf(s.parts['val']!.path), train: await rowsOf(s.rest.path) };
    const all = [...parts.test.ids, ...parts.val.ids, ...parts.train.ids].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 300 }, (_, i) => i)); // every row exactly once
    const count = (p: { labels: number[] }, y: number) => p.labels.filter((l) => l === y).length;
    for (const y of [0, 1, 2]) {
      const n = labels.filter((l) => l === y).length; // 90 each
      expect(count(parts.test, y)).toBe(Math.round(n * 0.2));
      expect(count(parts.val, y)).toBe(Math.round(n * 0.1));
    }
    expect(count(parts.test, -1)).toBe(6); // 30 unlabelled rows split the same way
    for (const p of Object.values(parts)) expect(p.ids).toEqual([...p.ids].sort((x, y) => x - y)); // file order kept
    const sources: string[] = [];
    for await (const b of (await DatasetReader.open(s.parts['test']!.path)).sources()) sources.push(...b);
    expect(sources).toEqual(parts.test.ids.map((i) => `f${i}.png`));
    expect((await rowsOf((await split(7, 'b')).parts['test']!.path)).ids).toEqual(parts.test.ids); // the same seed, the same split
    expect((await rowsOf((await split(8, 'c')).parts['test']!.path)).ids).not.toEqual(parts.test.ids);
    await expect(
      splitStratified(src, {
        parts: { test: { fraction: 0.7, path: join(dir, 'x.arrow') }, val: { fraction: 0.3, path: join(dir, 'y.arrow') } },
        rest: join(dir, 'z.arrow'),
        seed: 1,
      }),
    ).rejects.toThrow(/sum to less than 1/);
  });
});
