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
  const writer = DatasetWriter.create(outPath, info, { idType: o.dataset.idType });
  const perClass = new Array<number>(C).fill(0);
  let kept = 0;
  const D = o.dataset.inputSize;
  try {
    for await (const b of alignDatasetWithCaches(o.dataset, [cache])) {
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
      await writer.append(pickRows(b, D, idx, (r) => stats.pseudoLabel[r]!));
      kept += idx.length;
    }
    await writer.close();
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return { path: relative(o.dataRoot, outPath), rows: kept, perClass };
}
