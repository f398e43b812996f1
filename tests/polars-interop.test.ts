/**
 * Reads cache shards with nodejs-polars, an independent (Rust) Arrow implementation, and
 * checks the values bit for bit against what the writer was given.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pl from 'nodejs-polars';
import { describe, expect, it } from 'vitest';
import { DatasetReader, LogitCacheWriter, decodeFloat16, encodeFloat16, logSumExp, topK, writeSyntheticDataset } from '@distillate/shared';

const C = 10;
const ROWS = 300;
const T = 3;

function rawLogits(ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * C);
  ids.forEach((id, r) => {
    for (let c = 0; c < C; c++) out[r * C + c] = Math.fround(4 * Math.cos(id * 0.91 + c * 0.7) - c * 0.1);
  });
  return out;
}

async function build(storage: { mode: 'dense' | 'topk'; k?: number; dtype: 'float32' | 'float16' }) {
  const root = await mkdtemp(join(tmpdir(), 'distillate-polars-'));
  const dataPath = join(root, 'd.arrow');
  const { fingerprint } = await writeSyntheticDataset(dataPath, { rows: ROWS, classes: C });
  const w = await LogitCacheWriter.open({
    root,
    teacher: { name: 't', sha256: 'b'.repeat(64), classes: Array.from({ length: C }, (_, i) => String(i)) },
    dataset: { fingerprint, rows: ROWS },
    preprocessing: '',
    temperature: T,
    storage: storage.mode === 'dense' ? { mode: 'dense', dtype: storage.dtype } : { mode: 'topk', k: storage.k!, dtype: storage.dtype },
    labelStatistics: true,
  });
  const ids = new Int32Array(ROWS);
  for await (const b of await DatasetReader.open(dataPath)) ids.set(b.ids as Int32Array, Number(b.ids[0]));
  await w.append({ ids, logits: rawLogits(ids) });
  const m = await w.finish();
  const shard = await readFile(join(w.dir, m.shards[0]!.file));
  return { ids, scaled: rawLogits(ids).map((v) => Math.fround(v / T)), df: pl.readIPC(shard) };
}

/** Flatten a polars list/array column of floats into a Float32Array (exact: f32 → f64 → f32). */
function flat(df: pl.DataFrame, name: string, castFromHalf = false): Float32Array {
  const col = castFromHalf ? df.select(pl.col(name).cast(pl.List(pl.Float32))).getColumn(name) : df.getColumn(name);
  return Float32Array.from((col.toArray() as unknown as number[][]).flat());
}

describe('polars reads Distillate cache shards bit-exactly', () => {
  it('dense float32 + label statistics', async () => {
    const { ids, scaled, df } = await build({ mode: 'dense', dtype: 'float32' });
    expect(df.height).toBe(ROWS);
    expect(Int32Array.from(df.getColumn('id').toArray() as number[])).toEqual(ids);
    expect(flat(df, 'logits')).toEqual(scaled);
    expect(Float32Array.from(df.getColumn('confidence').toArray() as number[]).every((v) => v > 0 && v <= 1)).toBe(true);
    expect(Int32Array.from(df.getColumn('pseudo_label').toArray() as number[]).every((v) => v >= 0 && v < C)).toBe(true);
  });

  it('dense float16 (polars decodes the halves itself)', async () => {
    const { scaled, df } = await build({ mode: 'dense', dtype: 'float16' });
    expect(flat(df, 'logits', true)).toEqual(decodeFloat16(encodeFloat16(scaled)));
  });

  it('top-k float32 with logsumexp', async () => {
    const { scaled, df } = await build({ mode: 'topk', k: 4, dtype: 'float32' });
    const want = topK(scaled, C, 4);
    expect(Uint32Array.from((df.getColumn('topk_index').toArray() as unknown as number[][]).flat())).toEqual(want.indices);
    expect(flat(df, 'topk_logit')).toEqual(want.values);
    expect(Float32Array.from(df.getColumn('logsumexp').toArray() as number[])).toEqual(Float32Array.from(logSumExp(scaled, C)));
  });
});
