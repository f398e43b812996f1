/** The labelled/pool split: per-class labelled rows, the rest unlabelled or (a held-out split) kept labelled. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetReader } from './dataset.js';
import { splitLabelled } from './subset.js';
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
