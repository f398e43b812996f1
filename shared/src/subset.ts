/**
 * Row subsets of a dataset file, streamed batch by batch: the first rows (quick runs), and the
 * labelled/unlabelled split used by the semi-supervised experiments. Ids are kept, so caches
 * computed over a subset line up with it and not with the parent.
 */
import { DatasetReader, DatasetWriter, type DatasetBatch } from './dataset.js';
import type { Ids } from './internal/arrow-io.js';
import { mulberry32 } from './synthetic.js';

export interface WrittenDataset {
  readonly path: string;
  readonly rows: number;
  readonly fingerprint: string;
}

/** Copy the given rows of a batch (D values per row) into new arrays, with labels from `label(row)`. */
export function pickRows(
  batch: { readonly ids: Ids; readonly inputs: Float32Array | Uint8Array },
  D: number,
  rows: readonly number[],
  label: (row: number) => number,
): { ids: Ids; inputs: Float32Array | Uint8Array; labels: Int32Array } {
  const ids = batch.ids instanceof BigInt64Array ? new BigInt64Array(rows.length) : new Int32Array(rows.length);
  const inputs = batch.inputs instanceof Uint8Array ? new Uint8Array(rows.length * D) : new Float32Array(rows.length * D);
  const labels = new Int32Array(rows.length);
  rows.forEach((r, i) => {
    (ids as Int32Array)[i] = (batch.ids as Int32Array)[r]!;
    inputs.set(batch.inputs.subarray(r * D, (r + 1) * D), i * D);
    labels[i] = label(r);
  });
  return { ids, inputs, labels };
}

function pick(batch: DatasetBatch, D: number, rows: readonly number[], unlabel: boolean): { ids: Ids; inputs: Float32Array | Uint8Array; labels: Int32Array } {
  return pickRows(batch, D, rows, unlabel ? () => -1 : (r) => batch.labels[r]!);
}

/** Stream `src` once, writing the rows `choose` picks for each output; a `source` column comes along. */
async function writeSelected(
  src: string,
  outs: readonly { path: string; unlabel: boolean }[],
  choose: (batch: DatasetBatch) => number[][],
): Promise<WrittenDataset[]> {
  const reader = await DatasetReader.open(src);
  const withSource = await reader.hasSource();
  const writers = outs.map((o) => DatasetWriter.create(o.path, reader.info, { idType: reader.idType, source: withSource }));
  const sources = withSource ? reader.sources() : undefined;
  try {
    for await (const batch of reader.batches()) {
      const batchSources = sources === undefined ? undefined : (await sources.next()).value;
      if (sources !== undefined && batchSources?.length !== batch.rows) throw new Error(`${src}: the source column does not line up with the rows`);
      const chosen = choose(batch);
      for (let w = 0; w < writers.length; w++) {
        if (chosen[w]!.length === 0) continue;
        const rows = pick(batch, reader.inputSize, chosen[w]!, outs[w]!.unlabel);
        await writers[w]!.append(batchSources === undefined ? rows : { ...rows, sources: chosen[w]!.map((r) => batchSources[r]!) });
      }
    }
    const done: WrittenDataset[] = [];
    for (const w of writers) {
      const d = await w.close();
      done.push({ path: d.path, rows: d.rows, fingerprint: d.fingerprint });
    }
    return done;
  } catch (err) {
    await Promise.all(writers.map((w) => w.abort()));
    throw err;
  } finally {
    // The source column's reader holds the file open until it is finished or returned.
    await sources?.return(undefined);
  }
}

/** The first `rows` rows of `src`, written to `out`. */
export async function headDataset(src: string, out: string, rows: number): Promise<WrittenDataset> {
  if (!Number.isInteger(rows) || rows <= 0) throw new RangeError(`rows must be a positive integer, got ${rows}`);
  let seen = 0;
  const [d] = await writeSelected(src, [{ path: out, unlabel: false }], (batch) => {
    const take = Math.max(0, Math.min(batch.rows, rows - seen));
    seen += batch.rows;
    return [Array.from({ length: take }, (_, i) => i)];
  });
  return d!;
}

/**
 * Split `src` into a labelled part, the first `perClass` rows of each class in file order, and an
 * unlabelled pool holding every other row with its label removed (-1), or kept with
 * `keepPoolLabels` (a training/held-out split). Fails if a class has fewer than `perClass`
 * labelled rows.
 */
export async function splitLabelled(
  src: string,
  opts: { perClass: number; labelled: string; pool: string; keepPoolLabels?: boolean },
): Promise<{ labelled: WrittenDataset; pool: WrittenDataset }> {
  if (!Number.isInteger(opts.perClass) || opts.perClass <= 0) throw new RangeError(`perClass must be a positive integer, got ${opts.perClass}`);
  const taken: number[] = [];
  const [labelled, pool] = await writeSelected(
    src,
    [
      { path: opts.labelled, unlabel: false },
      { path: opts.pool, unlabel: opts.keepPoolLabels !== true },
    ],
    (batch) => {
      const keep: number[] = [];
      const rest: number[] = [];
      for (let r = 0; r < batch.rows; r++) {
        const y = batch.labels[r]!;
        if (y >= 0 && (taken[y] ?? 0) < opts.perClass) {
          taken[y] = (taken[y] ?? 0) + 1;
          keep.push(r);
        } else rest.push(r);
      }
      return [keep, rest];
    },
  );
  const reader = await DatasetReader.open(src);
  const missing = reader.info.classes.map((_, c) => c).filter((c) => (taken[c] ?? 0) < opts.perClass);
  if (missing.length > 0) {
    throw new RangeError(`${src}: classes ${missing.join(', ')} have fewer than ${opts.perClass} labelled rows`);
  }
  return { labelled: labelled!, pool: pool! };
}

/** `src` without any row labelled `label` (unlabelled rows stay): a transfer set with one class left out. */
export async function withoutClass(src: string, out: string, label: number): Promise<WrittenDataset> {
  const [d] = await writeSelected(src, [{ path: out, unlabel: false }], (batch) => {
    const keep: number[] = [];
    for (let r = 0; r < batch.rows; r++) if (batch.labels[r] !== label) keep.push(r);
    return [keep];
  });
  return d!;
}

/**
 * A stratified random split of `src`: for each class (and for the unlabelled rows), the given
 * fraction of its rows goes to each named output, drawn by `seed`; every other row goes to
 * `rest`. Rows keep their ids, labels and sources, in file order.
 */
export async function splitStratified(
  src: string,
  opts: { parts: Readonly<Record<string, { fraction: number; path: string }>>; rest: string; seed: number },
): Promise<{ parts: Record<string, WrittenDataset>; rest: WrittenDataset }> {
  const names = Object.keys(opts.parts);
  const total = names.reduce((a, n) => a + opts.parts[n]!.fraction, 0);
  if (names.some((n) => !(opts.parts[n]!.fraction > 0)) || !(total < 1))
    throw new RangeError(`split fractions must be > 0 and sum to less than 1, got ${names.map((n) => `${n}=${opts.parts[n]!.fraction}`).join(', ')}`);
  // First pass: the rows of each class, by position.
  const reader = await DatasetReader.open(src);
  const byClass = new Map<number, number[]>();
  let position = 0;
  for await (const batch of reader.batches()) {
    for (let r = 0; r < batch.rows; r++) {
      const y = batch.labels[r]!;
      let rows = byClass.get(y);
      if (rows === undefined) byClass.set(y, (rows = []));
      rows.push(position++);
    }
  }
  // Each class shuffled by the seed, then cut by the fractions.
  const part = new Int32Array(position).fill(-1);
  const rand = mulberry32(opts.seed);
  for (const rows of [...byClass.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r)) {
    for (let i = rows.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [rows[i], rows[j]] = [rows[j]!, rows[i]!];
    }
    let at = 0;
    names.forEach((_, k) => {
      const n = Math.round(rows.length * opts.parts[names[k]!]!.fraction);
      for (const r of rows.slice(at, at + n)) part[r] = k;
      at += n;
    });
  }
  let seen = 0;
  const written = await writeSelected(
    src,
    [...names.map((n) => ({ path: opts.parts[n]!.path, unlabel: false })), { path: opts.rest, unlabel: false }],
    (batch) => {
      const chosen: number[][] = Array.from({ length: names.length + 1 }, () => []);
      for (let r = 0; r < batch.rows; r++) {
        const k = part[seen + r]!;
        chosen[k < 0 ? names.length : k]!.push(r);
      }
      seen += batch.rows;
      return chosen;
    },
  );
  return { parts: Object.fromEntries(names.map((n, k) => [n, written[k]!] as const)), rest: written[names.length]! };
}
