/**
 * Pseudo-labels out of Distillate: a cache over a dataset → a table with one row per dataset row,
 * usable anywhere (pandas, polars, a spreadsheet): `source` (the file or key the row was
 * imported from; empty for datasets without a source column), `id`, the predicted `class` name,
 * `confidence`, `entropy` (nats) and `margin` (top-1 − top-2 probability), all at T = 1, and
 * optionally the top-k classes with their probabilities. A label job's cache has these
 * statistics already; for a dense precompute cache they are computed from its logits. Written
 * with nodejs-polars (CSV, Parquet or JSON lines), to a temp file renamed into place.
 */
import { rename, rm } from 'node:fs/promises';
import pl from 'nodejs-polars';
import { DatasetReader, LogitCacheReader, labelStatistics, type Ids } from '@distillate/shared';
import { ImportError } from './import/image-folder.js';

export type LabelFormat = 'csv' | 'parquet' | 'jsonl';

export interface ExportLabelsOptions {
  /** The cache directory (a label job's, or a dense precompute cache). */
  readonly cache: string;
  /** The dataset the cache was computed over (its fingerprint is checked). */
  readonly dataset: string;
  readonly out: string;
  readonly format: LabelFormat;
  /** Also the k most probable classes and their probabilities (dense caches only). */
  readonly topK?: number;
  /** Keep only rows with at least this confidence. */
  readonly minConfidence?: number;
}

/** An ImportError, so the HTTP layer answers both with 422. */
export class ExportError extends ImportError {}

export async function exportLabels(o: ExportLabelsOptions): Promise<{ rows: number; path: string }> {
  const dataset = await DatasetReader.open(o.dataset);
  const cache = await LogitCacheReader.open(o.cache);
  const m = cache.manifest;
  if (m.dataset.fingerprint !== (await dataset.fingerprint()))
    throw new ExportError(`${o.cache} was computed over another dataset than ${o.dataset} (fingerprints differ)`);
  if (m.views !== undefined) throw new ExportError(`${o.cache} is a view cache (several rows per image): export the labels of a plain cache`);
  const classes = m.teacher.classes;
  const C = classes.length;
  const k = o.topK ?? 0;
  if (m.tokens !== undefined) throw new ExportError(`${o.cache} is a token cache (a language model's): pseudo-labels are for classifier caches`);
  if (k > 0 && m.storage.mode === 'topk') throw new ExportError(`--top-k needs a dense cache; ${o.cache} keeps the top ${m.storage.k} logits only`);
  if (!(Number.isInteger(k) && k >= 0 && k <= C)) throw new ExportError(`--top-k must be a whole number from 1 to the ${C} classes`);
  if (m.storage.mode === 'topk' && !m.labelStatistics)
    throw new ExportError(`${o.cache} is a top-k cache without label statistics: export from a dense cache or a label job's`);

  // The dataset's ids and sources, in row order (one entry per output row: the table is that size anyway).
  const ids: number[] = [];
  for await (const b of dataset) for (let r = 0; r < b.rows; r++) ids.push(Number(b.ids[r]));
  const sources: string[] = [];
  if (await dataset.hasSource()) for await (const s of dataset.sources()) sources.push(...s);
  else sources.push(...ids.map(() => ''));

  const out = {
    source: [] as string[],
    id: [] as number[],
    class: [] as string[],
    confidence: [] as number[],
    entropy: [] as number[],
    margin: [] as number[],
  };
  const top = Array.from({ length: k }, () => ({ cls: [] as string[], p: [] as number[] }));
  let row = 0;
  const at1 = m.storage.mode === 'dense' ? { temperature: 1 } : {};
  for await (const b of cache.batches(at1)) {
    const stats = b.stats ?? (b.kind === 'dense' ? labelStatistics(b.logits, C) : undefined);
    if (stats === undefined) throw new ExportError(`${o.cache}: no label statistics`);
    for (let r = 0; r < b.rows; r++, row++) {
      const id = idOf(b.ids, r);
      if (ids[row] !== id) throw new ExportError(`${o.cache}: row ${row} has id ${id}, the dataset's is ${ids[row]}`);
      if (o.minConfidence !== undefined && stats.confidence[r]! < o.minConfidence) continue;
      out.source.push(sources[row]!);
      out.id.push(id);
      out.class.push(classes[stats.pseudoLabel[r]!]!);
      out.confidence.push(stats.confidence[r]!);
      out.entropy.push(stats.entropy[r]!);
      out.margin.push(stats.margin[r]!);
      if (k > 0 && b.kind === 'dense') {
        const z = b.logits.subarray(r * C, (r + 1) * C);
        const max = Math.max(...z);
        const sum = z.reduce((a, v) => a + Math.exp(v - max), 0);
        const order = Array.from(z.keys()).sort((x, y) => z[y]! - z[x]! || x - y);
        for (let j = 0; j < k; j++) {
          top[j]!.cls.push(classes[order[j]!]!);
          top[j]!.p.push(Math.exp(z[order[j]!]! - max) / sum);
        }
      }
    }
  }
  if (row !== ids.length) throw new ExportError(`${o.cache} holds ${row} rows, the dataset ${ids.length}`);

  const columns: Record<string, unknown> = {
    source: out.source,
    id: Int32Array.from(out.id),
    class: out.class,
    confidence: Float32Array.from(out.confidence),
    entropy: Float32Array.from(out.entropy),
    margin: Float32Array.from(out.margin),
  };
  top.forEach((t, j) => {
    columns[`top${j + 1}_class`] = t.cls;
    columns[`top${j + 1}_p`] = Float32Array.from(t.p);
  });
  const df = pl.DataFrame(columns);
  const tmp = `${o.out}.tmp-${process.pid}`;
  try {
    if (o.format === 'csv') df.writeCSV(tmp);
    else if (o.format === 'parquet') df.writeParquet(tmp);
    else df.writeJSON(tmp, { format: 'lines' });
    await rename(tmp, o.out);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new ExportError(`${o.out}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  return { rows: out.id.length, path: o.out };
}

function idOf(ids: Ids, r: number): number {
  return Number(ids[r]!);
}
