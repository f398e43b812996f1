/**
 * Import a table into a dataset file: Parquet (read by hyparquet, a row range at a time), CSV
 * (Papa Parse, streamed) or JSON lines (streamed line by line, each parsed by JSON.parse), so
 * memory stays bounded whatever the file's size. `input` names the
 * sample: one image column (bytes, or Hugging Face's `{bytes, path}` struct; decoded as image
 * folders are), one list-of-numbers column, or several numeric columns (float32 rows). `label`
 * names an integer or a text column; class names come from `classes`, else Hugging Face's
 * ClassLabel names in the Parquet metadata, else the sorted label texts (or `class-0 …` for
 * integers). Each row's `source` is its `key` column, else an image's `path`, else
 * `<file>#<row>`.
 *
 * nodejs-polars cannot hand binary columns to JavaScript, so Parquet (where images live) goes
 * through hyparquet; and it reads CSV and JSON lines whole and fails a whole CSV on one line with
 * too many fields, so the text formats are streamed instead: a line that does not parse, or has
 * another number of fields than the header, is skipped with its reason like any bad row.
 */
import { availableParallelism } from 'node:os';
import { basename, extname } from 'node:path';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import Papa from 'papaparse';
import { parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { asyncBufferFromFile } from 'hyparquet/src/node.js';
import { ipcSchemaMetadata, type DatasetInfo } from '@distillate/shared';
import { decode, mapConcurrently, reasonOf, type Decoded, type Fit } from './image-folder.js';
import { ImportError, ImportSink, type SkippedFile } from './sink.js';

export interface TableImport {
  readonly table: string;
  readonly out: string;
  /** One image or list column, or several numeric columns. */
  readonly input: readonly string[];
  readonly label?: string;
  /** A column whose values name the rows (the `source` column). */
  readonly key?: string;
  readonly classes?: readonly string[];
  readonly size?: readonly [number, number];
  readonly channels?: 1 | 3;
  readonly fit?: Fit;
  readonly onError?: 'skip' | 'fail';
  readonly maxSkipped?: number;
  readonly maxPixels?: number;
  readonly concurrency?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface TableImportReport {
  readonly table: string;
  readonly out: string;
  readonly input: 'image' | 'list' | 'columns';
  readonly classes: readonly string[];
  readonly inputShape: readonly number[];
  readonly imported: number;
  readonly perClass: Readonly<Record<string, number>>;
  readonly skipped: readonly SkippedFile[];
  readonly fingerprint: string;
}

/**
 * A row as the importer reads it: the values of the columns it asked for, in that order (a value
 * a row lacks is undefined), or an empty row that carries why a text-table record could not be
 * read (skipped with that reason). Arrays, not objects keyed by column: a 785-column CSV row as an
 * object is a dictionary-mode object whose building and collection took most of the import.
 */
const BAD_ROW = Symbol('bad row');
type Row = unknown[] & { [BAD_ROW]?: string };
const badRow = (reason: string): Row => Object.assign([], { [BAD_ROW]: reason });
const badReason = (row: Row): string | undefined => row[BAD_ROW];

interface TableReader {
  readonly rows: number;
  readonly columns: readonly string[];
  /** Class names a column's metadata gives (Hugging Face ClassLabel). */
  classNames(column: string): string[] | undefined;
  /** Every row's value of one column, in order (undefined for a row that could not be read). */
  values(column: string): Promise<unknown[]>;
  /** Rows [start, end), each the values of `columns` in that order. */
  read(start: number, end: number, columns: readonly string[]): Promise<Row[]>;
}

const CHUNK = 1024;
/** Rows read at once by the import loop: fewer for a wide table (784 pixel columns: 334), so that the values in flight stay near 256k. */
const chunkRows = (columns: number): number => Math.max(16, Math.min(CHUNK, Math.floor((1 << 18) / columns)));

async function openParquet(path: string): Promise<TableReader> {
  const file = await asyncBufferFromFile(path);
  const md = await parquetMetadataAsync(file);
  const columns = parquetSchema(md).children.map((c) => c.element.name);
  // Hugging Face's features: a key of the file's metadata, or of the Arrow schema embedded in it.
  const kv = (key: string): string | undefined => md.key_value_metadata?.find((e) => e.key === key)?.value;
  const embedded = kv('ARROW:schema');
  let hf = kv('huggingface');
  try {
    hf ??= embedded === undefined ? undefined : ipcSchemaMetadata(Buffer.from(embedded, 'base64')).get('huggingface');
  } catch {
    // an unreadable embedded schema: no class names from it
  }
  let features: Record<string, { names?: unknown }> = {};
  try {
    features = hf === undefined ? {} : ((JSON.parse(hf) as { info?: { features?: typeof features } }).info?.features ?? {});
  } catch {
    features = {};
  }
  const rows = Number(md.num_rows);
  const read = async (start: number, end: number, cols: readonly string[]): Promise<Row[]> => {
    const records = (await parquetReadObjects({ file, rowStart: start, rowEnd: end, columns: [...cols], utf8: false })) as Array<Record<string, unknown>>;
    return records.map((r) => cols.map((c) => r[c]));
  };
  return {
    rows,
    columns,
    classNames: (c) => {
      const names = features[c]?.names;
      return Array.isArray(names) && names.every((n) => typeof n === 'string') ? names : undefined;
    },
    read,
    values: (column) => columnValues(read, rows, column),
  };
}

/** Every row's value of one column, read 16k rows at a time. */
async function columnValues(read: TableReader['read'], rows: number, column: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let s = 0; s < rows; s += CHUNK * 16) for (const r of await read(s, Math.min(rows, s + CHUNK * 16), [column])) out.push(r[0]);
  return out;
}

/** A CSV cell: a number when it reads as a finite one, null when empty, else the text. */
function csvCell(value: string | undefined): unknown {
  if (value === undefined) return undefined;
  if (value === '') return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : value;
}

/** One record of a text table: a CSV line's fields, a JSON line's object, or why it could not be read. */
type TextRecord = { readonly fields: readonly string[] } | { readonly object: Record<string, unknown> } | { readonly bad: string };

/**
 * Every record of a CSV file (after its header, which `header` receives) or a JSON-lines file, in
 * order. A CSV line with another field count than the header, or a JSON line that does not parse
 * or is not an object, is a bad record.
 */
async function* textRecords(path: string, format: 'csv' | 'jsonl', header: (h: readonly string[]) => void = () => {}): AsyncGenerator<TextRecord> {
  if (format === 'csv') {
    let names: string[] | undefined;
    // Papa Parse's stream, fields as text, cast here (csvCell). csv-parse, used before, parsed
    // 18 MB/s here against Papa Parse's 160 MB/s, and its per-cell `cast` callback made a
    // 784-column CSV 40 ms per row.
    const parser = Papa.parse(Papa.NODE_STREAM_INPUT, { delimiter: ',', skipEmptyLines: true });
    createReadStream(path, { encoding: 'utf8' })
      .on('error', (err) => parser.destroy(err))
      .pipe(parser);
    for await (const fields of parser as AsyncIterable<string[]>) {
      if (names === undefined) {
        names = fields.map((name, i) => (i === 0 ? name.replace(/^\uFEFF/, '') : name));
        header(names);
        continue;
      }
      yield fields.length === names.length ? { fields } : { bad: `${fields.length} fields, the header has ${names.length}` };
    }
    return;
  }
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      yield { bad: `line ${n} is not JSON (${reasonOf(err)})` };
      continue;
    }
    yield value !== null && typeof value === 'object' && !Array.isArray(value)
      ? { object: value as Record<string, unknown> }
      : { bad: `line ${n} is not a JSON object` };
  }
}

/**
 * A CSV or JSON-lines table, streamed: one pass counts the rows, collects the columns and keeps
 * the values of the column `keep` names (the label: no second pass for the class names), and each
 * later pass reads in order (a read that does not continue where the last one stopped starts the
 * file again), holding one range of rows at a time.
 */
async function openText(path: string, format: 'csv' | 'jsonl', keep: string | undefined): Promise<TableReader> {
  const columns: string[] = [];
  let header: readonly string[] = [];
  const seen = new Set<string>();
  const column = (k: string): void => {
    if (!seen.has(k)) {
      seen.add(k);
      columns.push(k);
    }
  };
  // A record's values of `cols`: for CSV by the header's positions (found once per read).
  const rowOf = (rec: TextRecord, cols: readonly string[], at: readonly number[]): Row => {
    if ('bad' in rec) return badRow(rec.bad);
    if ('fields' in rec) return at.map((i) => csvCell(rec.fields[i]));
    return cols.map((c) => rec.object[c]);
  };
  const positions = (cols: readonly string[]): number[] => cols.map((c) => header.indexOf(c));
  let rows = 0;
  const kept: unknown[] = [];
  try {
    const keepAt = keep === undefined ? [] : [keep];
    let at: number[] | undefined;
    const onHeader = (h: readonly string[]): void => {
      header = h;
      h.forEach(column);
    };
    for await (const rec of textRecords(path, format, onHeader)) {
      rows++;
      if ('object' in rec) for (const k of Object.keys(rec.object)) column(k);
      if (keep !== undefined) kept.push(rowOf(rec, keepAt, (at ??= positions(keepAt)))[0]);
    }
  } catch (err) {
    throw new ImportError(`${path}: ${reasonOf(err).split('\n')[0]}`);
  }
  let cursor: { it: AsyncGenerator<TextRecord>; at: number } | undefined;
  const reader: TableReader = {
    rows,
    columns,
    classNames: () => undefined,
    values: async (c) => (c === keep ? kept : columnValues(reader.read, rows, c)),
    async read(start, end, cols) {
      if (cursor === undefined || cursor.at > start) {
        await cursor?.it.return(undefined);
        cursor = { it: textRecords(path, format), at: 0 };
      }
      const at = positions(cols);
      const out: Row[] = [];
      while (cursor.at < end) {
        const next = await cursor.it.next();
        if (next.done === true) break;
        if (cursor.at++ < start) continue;
        out.push(rowOf(next.value, cols, at));
      }
      return out;
    },
  };
  return reader;
}

/** How a value of the input column(s) becomes a sample. */
type InputKind = 'image' | 'list' | 'columns';

function kindOf(column: string, value: unknown, columns: number): InputKind {
  const isNumber = (v: unknown): boolean => typeof v === 'number' || typeof v === 'bigint';
  if (imageBytes(value) !== undefined) {
    if (columns > 1) throw new ImportError(`--input ${column} holds images: give it alone`);
    return 'image';
  }
  if (Array.isArray(value) && value.every(isNumber)) {
    if (columns > 1) throw new ImportError(`--input ${column} holds lists: give it alone`);
    return 'list';
  }
  if (isNumber(value)) return 'columns';
  const type = value === null ? 'null' : Array.isArray(value) ? 'a list of non-numbers' : typeof value === 'string' ? 'text' : typeof value;
  throw new ImportError(`--input ${column} holds ${type}: it takes an image column (bytes, or {bytes, path}), a list of numbers, or numeric columns`);
}

export async function importTable(o: TableImport): Promise<TableImportReport> {
  const ext = extname(o.table).toLowerCase();
  const format = ext === '.parquet' ? 'parquet' : ext === '.csv' ? 'csv' : ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : undefined;
  if (format === undefined) throw new ImportError(`${o.table}: a table is .parquet, .csv or .jsonl`);
  let table: TableReader;
  try {
    table = format === 'parquet' ? await openParquet(o.table) : await openText(o.table, format, o.label);
  } catch (err) {
    if (err instanceof ImportError) throw err;
    throw new ImportError(`${o.table}: cannot read it as ${format} (${reasonOf(err)})`);
  }
  // A row read by the loop below: the input columns, then the label, then the key.
  const wanted = [...o.input, ...(o.label === undefined ? [] : [o.label]), ...(o.key === undefined ? [] : [o.key])];
  const labelAt = o.label === undefined ? undefined : o.input.length;
  const keyAt = o.key === undefined ? undefined : wanted.length - 1;
  const missing = wanted.filter((c) => !table.columns.includes(c));
  if (o.input.length === 0) throw new ImportError('--input names the column(s) that hold the samples');
  if (missing.length > 0) throw new ImportError(`${o.table} has no column ${missing.join(', ')} (it has ${table.columns.join(', ')})`);
  const total = table.rows;
  if (total === 0) throw new ImportError(`${o.table} has no rows`);

  const channels = o.channels ?? 3;
  const fit = o.fit ?? 'cover';
  const maxPixels = o.maxPixels ?? 40_000_000;
  const { kind, size } = await firstLook(table, o, { channels, fit, maxPixels });

  // Class names: given, from the file's metadata, or from the label values (one pass over that column).
  let classes = o.classes === undefined ? undefined : [...o.classes];
  let labelIsText = false;
  if (o.label !== undefined) {
    const present = (await table.values(o.label)).filter((v) => v !== null && v !== undefined);
    labelIsText = present.some((v) => typeof v === 'string');
    if (labelIsText && present.some((v) => typeof v !== 'string')) throw new ImportError(`--label ${o.label} mixes text and numbers`);
    if (!labelIsText && present.some((v) => !(typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v)))))
      throw new ImportError(`--label ${o.label} holds non-integer numbers: a label is a class index or a class name`);
    classes ??= table.classNames(o.label);
    classes ??= labelIsText
      ? [...new Set(present as string[])].sort()
      : Array.from({ length: present.reduce<number>((m, v) => Math.max(m, Number(v)), 0) + 1 }, (_, c) => `class-${c}`);
  }
  if (classes === undefined || classes.length === 0) throw new ImportError('a table without --label is an unlabelled pool: give its classes (--classes a,b,c)');

  const concurrency = Math.max(1, o.concurrency ?? availableParallelism());
  const sink = new ImportSink({ out: o.out, onError: o.onError ?? 'skip', maxSkipped: o.maxSkipped ?? 0.05, unit: 'rows' });
  const name = basename(o.table);
  let D: number | undefined = kind === 'columns' ? o.input.length : undefined;
  let done = 0;
  try {
    const chunk = chunkRows(wanted.length);
    for (let start = 0; start < total; start += chunk) {
      const rows = await table.read(start, Math.min(total, start + chunk), wanted);
      const kept: Array<{ sample: Uint8Array | Float32Array; label: number; source: string }> = [];
      const samples = await mapConcurrently(
        rows.map((row, i) => ({ row, index: start + i })),
        kind === 'image' ? concurrency : 1,
        async ({ row, index }) => {
          const image = o.input.length === 1 ? row[0] : undefined;
          const path =
            typeof image === 'object' && image !== null && typeof (image as { path?: unknown }).path === 'string'
              ? (image as { path: string }).path
              : undefined;
          const key = keyAt === undefined ? undefined : row[keyAt];
          const source = key !== null && key !== undefined ? String(key) : (path ?? `${name}#${index}`);
          try {
            const bad = badReason(row);
            if (bad !== undefined) throw new Error(bad);
            const label = labelAt === undefined ? -1 : labelOf(row[labelAt], classes!, labelIsText);
            if (kind === 'image') {
              const bytes = imageBytes(image);
              if (bytes === undefined) throw new Error(`no image bytes in ${o.input[0]}`);
              return { sample: (await decode(bytes, { size, channels, fit, maxPixels })).pixels as Uint8Array, label, source };
            }
            const values = kind === 'list' ? (row[0] as unknown[] | null) : row.slice(0, o.input.length);
            if (values === null || values === undefined) throw new Error(`${o.input[0]} is empty`);
            const empty = o.input.find((_c, k) => kind === 'columns' && (values[k] === null || values[k] === undefined));
            if (empty !== undefined) throw new Error(`${empty} is empty`);
            D ??= values.length;
            if (values.length !== D) throw new Error(`${values.length} values, the first row had ${D}`);
            const sample = Float32Array.from(values, Number);
            if (!sample.every(Number.isFinite)) throw new Error('a value is not a finite number');
            return { sample, label, source };
          } catch (err) {
            sink.skip(source, reasonOf(err));
            return undefined;
          } finally {
            o.onProgress?.(++done, total);
          }
        },
      );
      for (const s of samples) if (s !== undefined) kept.push(s);
      if (kept.length === 0) continue;
      const n = kept[0]!.sample.length;
      const inputs = kind === 'image' ? new Uint8Array(kept.length * n) : new Float32Array(kept.length * n);
      kept.forEach((k, i) => inputs.set(k.sample, i * n));
      const info: DatasetInfo =
        kind === 'image'
          ? { inputShape: [size![0], size![1], channels], layout: 'HWC', scaling: { scale: 1 / 255, offset: 0 }, classes, inputType: 'uint8' }
          : { inputShape: [n], layout: 'flat', scaling: { scale: 1, offset: 0 }, classes, inputType: 'float32' };
      await sink.append(info, { inputs, labels: Int32Array.from(kept, (k) => k.label), sources: kept.map((k) => k.source) });
    }
    const inputShape = kind === 'image' ? [size![0], size![1], channels] : [D ?? 0];
    return await sink.finish(total, { table: o.table, out: o.out, input: kind, classes, inputShape });
  } catch (err) {
    await sink.fail(err, { table: o.table, out: o.out });
    throw err;
  }
}

/**
 * How rows become samples, from the first rows: the first non-null value of each input column
 * decides the kind, and the first image that decodes sets the size of every other (as for
 * folders). Its own function so that those rows are not held for the rest of the import.
 */
async function firstLook(
  table: TableReader,
  o: TableImport,
  decoding: { channels: 1 | 3; fit: Fit; maxPixels: number },
): Promise<{ kind: InputKind; size: readonly [number, number] | undefined }> {
  const head = await table.read(0, Math.min(table.rows, chunkRows(o.input.length)), o.input);
  const kinds = o.input.map((c, k) =>
    kindOf(c, head.find((r) => badReason(r) === undefined && r[k] !== null && r[k] !== undefined)?.[k] ?? null, o.input.length),
  );
  const kind = kinds[0]!;
  if (kind !== 'image' || o.size !== undefined) return { kind, size: o.size };
  for (const row of head) {
    const bytes = imageBytes(row[0]);
    const first: Decoded | undefined = bytes === undefined ? undefined : await decode(bytes, { size: undefined, ...decoding }).catch(() => undefined);
    if (first !== undefined) return { kind, size: [first.height, first.width] };
  }
  throw new ImportError(`none of the first ${head.length} images of ${o.input[0]} decodes: give --size, or check the column`);
}

/** The encoded image of a cell: raw bytes, or the `bytes` of a Hugging Face `{bytes, path}` struct. */
function imageBytes(value: unknown): Uint8Array | undefined {
  const bytes = value instanceof Uint8Array ? value : (value as { bytes?: unknown } | null | undefined)?.bytes;
  return bytes instanceof Uint8Array ? bytes : undefined;
}

/** A label value's class index (−1: unlabelled), or an error naming the bad value. */
function labelOf(v: unknown, classes: readonly string[], isText: boolean): number {
  if (v === null || v === undefined) return -1;
  if (isText) {
    const c = classes.indexOf(String(v));
    if (c < 0) throw new Error(`label "${String(v)}" is not one of the classes`);
    return c;
  }
  const c = Number(v);
  if (!(Number.isInteger(c) && c >= 0 && c < classes.length)) throw new Error(`label ${c} is outside the ${classes.length} classes`);
  return c;
}
