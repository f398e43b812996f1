/**
 * The splits an import writes next to its output, in the same run: stratified random parts
 * (`--split test=0.1 --seed S`: `<stem>-test.arrow`, the rest `<stem>-train.arrow`) and a
 * labelled subset with the rest as an unlabelled pool (`--labelled N`: the first N / classes
 * rows of each class of the training part in `<stem>-labelled-N.arrow`, the others without
 * labels in `<stem>-pool.arrow`), as the Fashion-MNIST import does.
 */
import { DatasetReader, splitLabelled, splitStratified, type WrittenDataset } from '@distillate/shared';
import { ImportError } from './sink.js';

export interface SplitRequest {
  /** Part name → fraction of every class. */
  readonly split?: Readonly<Record<string, number>>;
  readonly seed?: number;
  /** Labelled rows to keep in total (an equal number per class). */
  readonly labelled?: number;
}

/** `test=0.1,val=0.05` → { test: 0.1, val: 0.05 }. */
export function parseSplit(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(',')) {
    const m = /^([A-Za-z][\w-]*)=(0?\.\d+|[01](?:\.\d+)?)$/.exec(part.trim());
    if (m === null) throw new ImportError(`--split takes name=fraction pairs, e.g. test=0.1,val=0.05; got "${part}"`);
    if (m[1] === 'train') throw new ImportError('--split: "train" is the rest of the rows; name the other parts');
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

export async function writeSplits(out: string, r: SplitRequest): Promise<Array<{ name: string } & WrittenDataset>> {
  const stem = out.replace(/\.arrow$/, '');
  const written: Array<{ name: string } & WrittenDataset> = [];
  let train = out;
  if (r.split !== undefined && Object.keys(r.split).length > 0) {
    const parts = Object.fromEntries(Object.entries(r.split).map(([name, fraction]) => [name, { fraction, path: `${stem}-${name}.arrow` }]));
    const s = await splitStratified(out, { parts, rest: `${stem}-train.arrow`, seed: r.seed ?? 1 });
    for (const [name, d] of Object.entries(s.parts)) written.push({ name, ...d });
    written.push({ name: 'train', ...s.rest });
    train = s.rest.path;
  }
  if (r.labelled !== undefined) {
    const classes = (await DatasetReader.open(train)).info.classes.length;
    if (!(Number.isInteger(r.labelled) && r.labelled > 0 && r.labelled % classes === 0))
      throw new ImportError(`--labelled ${r.labelled}: give a positive multiple of the ${classes} classes (the same number of labelled rows per class)`);
    try {
      const s = await splitLabelled(train, { perClass: r.labelled / classes, labelled: `${stem}-labelled-${r.labelled}.arrow`, pool: `${stem}-pool.arrow` });
      written.push({ name: `labelled-${r.labelled}`, ...s.labelled }, { name: 'pool', ...s.pool });
    } catch (err) {
      throw new ImportError(`--labelled ${r.labelled}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return written;
}
