/**
 * The benches' training data: a generated 28×28 dataset plus a dense 10-class cache of
 * pseudo-random teacher logits. (scripts/bench/ab-train.ts keeps its own copy: it is copied into
 * other checkouts, which do not have this file.)
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, LogitCacheWriter, writeSyntheticDataset } from '@distillate/shared';

export async function makeData(dir: string, rows: number): Promise<{ data: string; cache: string }> {
  await mkdir(dir, { recursive: true });
  const data = join(dir, `d${rows}.arrow`);
  const { fingerprint } = await writeSyntheticDataset(data, { rows, inputShape: [28, 28, 1], classes: 10, batchRows: 4096 });
  const w = await LogitCacheWriter.open({
    root: join(dir, 'cache'),
    teacher: { name: 'bench', sha256: 'e'.repeat(64), classes: Array.from({ length: 10 }, (_, i) => `class-${i}`) },
    dataset: { fingerprint, rows },
    preprocessing: '',
    temperature: 4,
    storage: { mode: 'dense' },
    fsync: false,
  });
  for await (const b of await DatasetReader.open(data)) {
    const z = Float32Array.from({ length: b.rows * 10 }, (_, i) => Math.sin(i * 0.7 + Number(b.ids[0])) * 5);
    await w.append({ ids: b.ids, logits: z });
  }
  const m = await w.finish();
  return { data, cache: join(dir, 'cache', m.key) };
}
