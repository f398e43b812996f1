/**
 * Label jobs' selection: the rows of a labelled pool whose pseudo-label is confident enough
 * (and within a per-class cap), written as a dataset whose labels are the pseudo-labels.
 */
import { mkdir } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { DatasetWriter, LogitCacheReader, alignDatasetWithCaches, pickRows, type DatasetReader } from '@distillate/shared';
import { confinedPath } from '../paths.js';
import type { JobRequest } from './request.js';

export interface Selection {
  /** Relative to the data root. */
  readonly path: string;
  readonly rows: number;
  readonly perClass: number[];
}

export async function selectPseudoLabelled(o: {
  dataRoot: string;
  cacheRoot: string;
  dataset: DatasetReader;
  datasetPath: string;
  key: string;
  label: NonNullable<JobRequest['label']>;
}): Promise<Selection> {
  const opts = o.label;
  const cache = await LogitCacheReader.open(join(o.cacheRoot, o.key));
  const outRel = opts.output ?? join(relative(o.dataRoot, dirname(o.datasetPath)), `${basename(o.datasetPath, '.arrow')}.pseudo-${o.key.slice(0, 12)}.arrow`);
  const outPath = await confinedPath(o.dataRoot, outRel, 'label output', false);
  await mkdir(dirname(outPath), { recursive: true });
  const C = cache.classes.length;
  const info = { ...o.dataset.info, classes: [...cache.classes] };
  // An imported pool's `source` column comes along, so each selected row still names its file or table row.
  const withSource = await o.dataset.hasSource();
  const writer = DatasetWriter.create(outPath, info, { idType: o.dataset.idType, source: withSource });
  const sourceBatches = withSource ? o.dataset.sources() : undefined;
  let pending: string[] = [];
  /** The next `n` rows' sources: the aligned batches cut the dataset's record batches at cache shard bounds, in row order. */
  const nextSources = async (n: number): Promise<string[]> => {
    while (pending.length < n) {
      const r = await sourceBatches!.next();
      if (r.done === true) throw new Error(`${o.datasetPath}: the source column ends before the rows do`);
      pending = pending.length === 0 ? r.value : pending.concat(r.value);
    }
    const out = pending.slice(0, n);
    pending = pending.slice(n);
    return out;
  };
  const perClass = new Array<number>(C).fill(0);
  let kept = 0;
  const D = o.dataset.inputSize;
  try {
    for await (const b of alignDatasetWithCaches(o.dataset, [cache])) {
      const sources = sourceBatches === undefined ? undefined : await nextSources(b.rows);
      const stats = b.teachers[0]!.stats!;
      const idx: number[] = [];
      for (let r = 0; r < b.rows; r++) {
        const y = stats.pseudoLabel[r]!;
        if (stats.confidence[r]! < opts.threshold) continue;
        if (opts.perClassMax !== undefined && perClass[y]! >= opts.perClassMax) continue;
        perClass[y]! += 1;
        idx.push(r);
      }
      if (idx.length === 0) continue;
      const rows = pickRows(b, D, idx, (r) => stats.pseudoLabel[r]!);
      await writer.append(sources === undefined ? rows : { ...rows, sources: idx.map((r) => sources[r]!) });
      kept += idx.length;
    }
    await writer.close();
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    await sourceBatches?.return(undefined);
  }
  return { path: relative(o.dataRoot, outPath), rows: kept, perClass };
}
