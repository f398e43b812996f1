/**
 * One ORT-engine training rate for the A/B of two checkouts (scripts/bench/ab-checkouts.sh):
 * samples/s through train() (CPU EP, batch 128, KD + CE, Adam) on generated 28×28 data with a
 * dense cache of 12,800 rows, median over the epochs after a warm-up, printed as one JSON line.
 *
 *   node --conditions=source --import tsx scripts/bench/ab-train.ts <work-dir> mlp|cnn
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, LogitCacheWriter, writeSyntheticDataset } from '@distillate/shared';
import { parseRecipe, train } from '@distillate/trainer';
const dir = process.argv[2]!;
const which = process.argv[3]!;
const rows = 12800;
await mkdir(dir, { recursive: true });
const data = join(dir, 'd.arrow');
const { fingerprint } = await writeSyntheticDataset(data, { rows, inputShape: [28, 28, 1], classes: 10, batchRows: 4096 });
const w = await LogitCacheWriter.open({
  root: join(dir, 'cache'),
  teacher: { name: 'b', sha256: 'e'.repeat(64), classes: Array.from({ length: 10 }, (_, i) => `c${i}`) },
  dataset: { fingerprint, rows },
  preprocessing: '',
  temperature: 4,
  storage: { mode: 'dense' },
  fsync: false,
});
for await (const b of await DatasetReader.open(data))
  await w.append({ ids: b.ids, logits: Float32Array.from({ length: b.rows * 10 }, (_, i) => Math.sin(i * 0.7 + Number(b.ids[0])) * 5) });
const m = await w.finish();
const student = which === 'mlp' ? { kind: 'mlp', hidden: [512, 256] } : { kind: 'cnn', blocks: [{ filters: 32 }, { filters: 64 }], dense: [128] };
const epochs = which === 'mlp' ? 6 : 3;
const r = await train(
  parseRecipe({
    name: 'ab',
    data: { train: data },
    teachers: [{ cache: join(dir, 'cache', m.key) }],
    student,
    distill: { method: 'kd', params: { temperature: 4 } },
    epochs,
    batchSize: 128,
    out: join(dir, 'runs'),
    shuffleBuffer: 2048,
    executionProvider: 'cpu',
  }),
  { skipExport: true },
);
const rates = r.metrics
  .slice(1)
  .map((x) => x.samplesPerSecond)
  .sort((a, b) => a - b);
console.log(JSON.stringify({ which, median: rates[Math.floor(rates.length / 2)] }));
