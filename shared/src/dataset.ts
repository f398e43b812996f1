/**
 * The dataset file: one Arrow IPC file with columns `id`, `input` (FixedSizeList of Float32 or
 * Uint8) and `label` (nullable Int32), plus schema metadata describing how to read `input`.
 */
import { DataType, Field, Float32, Int32, Int64, Precision, Schema, Uint8, Utf8 } from 'apache-arrow';
import { z } from 'zod';
import {
  AtomicArrowFileWriter,
  fixedSizeListData,
  idData,
  listColumn,
  listType,
  nullableInt32Column,
  nullableInt32Data,
  primitiveColumn,
  readArrowFile,
  readArrowFileFrom,
  readArrowFileReusing,
  readArrowBatches,
  readArrowSchema,
  recordBatch,
  sha256File,
  utf8Column,
  utf8Data,
  type Ids,
} from './internal/arrow-io.js';
import { segmentOf } from './internal/offsets.js';

export type { Ids } from './internal/arrow-io.js';

export const META = {
  format: 'distillate.format',
  inputShape: 'distillate.input_shape',
  layout: 'distillate.layout',
  scaling: 'distillate.scaling',
  classes: 'distillate.classes',
} as const;

export const DATASET_FORMAT = 'distillate.dataset/1';

export const DatasetInfoSchema = z.object({
  /** Shape of one sample, e.g. [28, 28, 1]. Its product is the list size D. */
  inputShape: z.array(z.number().int().positive()).min(1),
  /** How `inputShape` is laid out: image height-width-channels, channels-first, or a flat vector. */
  layout: z.enum(['HWC', 'CHW', 'flat']),
  /** Model input = stored value × scale + offset (Uint8 pixels: scale 1/255). */
  scaling: z.object({ scale: z.number().finite(), offset: z.number().finite() }),
  classes: z.array(z.string()).min(1),
  inputType: z.enum(['float32', 'uint8']),
});
export type DatasetInfo = z.infer<typeof DatasetInfoSchema>;

export interface DatasetBatch {
  readonly rows: number;
  readonly ids: Ids;
  /** [rows, D] flat row-major, as stored (apply `info.scaling` to get model inputs). */
  readonly inputs: Float32Array | Uint8Array;
  /** Class index per row; -1 where the row is unlabelled. */
  readonly labels: Int32Array;
}

export class DatasetFormatError extends Error {
  override readonly name = 'DatasetFormatError';
}

export function inputSize(info: Pick<DatasetInfo, 'inputShape'>): number {
  return info.inputShape.reduce((a, b) => a * b, 1);
}

/**
 * The dataset's schema. With `source`, a fourth column `source` (Utf8) says where each row came
 * from: a file path relative to the imported folder, or a row's key in an imported table.
 */
export function datasetSchema(info: DatasetInfo, idType: 'int32' | 'int64' = 'int32', options: { source?: boolean } = {}): Schema {
  const D = inputSize(info);
  const metadata = new Map<string, string>([
    [META.format, DATASET_FORMAT],
    [META.inputShape, JSON.stringify(info.inputShape)],
    [META.layout, info.layout],
    [META.scaling, JSON.stringify(info.scaling)],
    [META.classes, JSON.stringify(info.classes)],
  ]);
  return new Schema(
    [
      new Field('id', idType === 'int64' ? new Int64() : new Int32(), false),
      new Field('input', listType(D, info.inputType === 'uint8' ? new Uint8() : new Float32()), false),
      new Field('label', new Int32(), true),
      ...(options.source === true ? [new Field('source', new Utf8(), false)] : []),
    ],
    metadata,
  );
}

/** The dataset description in an Arrow schema's metadata; DatasetFormatError if it is not a dataset. */
export function parseDatasetSchema(schema: Schema, file: string): { info: DatasetInfo; idType: 'int32' | 'int64' } {
  const md = schema.metadata;
  if (md.get(META.format) !== DATASET_FORMAT) {
    throw new DatasetFormatError(`${file}: not a Distillate dataset (schema metadata ${META.format} is ${JSON.stringify(md.get(META.format) ?? null)})`);
  }
  if (md.get(META.layout) === 'tokens') {
    throw new DatasetFormatError(
      `${file}: a token dataset (layout tokens): this needs an image or vector dataset; token datasets go to language-model teachers and students`,
    );
  }
  const input = schema.fields.find((f) => f.name === 'input');
  const id = schema.fields.find((f) => f.name === 'id');
  if (input === undefined || id === undefined || !schema.fields.some((f) => f.name === 'label')) {
    throw new DatasetFormatError(`${file}: dataset needs columns id, input, label; found ${schema.fields.map((f) => f.name).join(', ')}`);
  }
  const child: DataType | undefined = (input.type as { children?: Field[] }).children?.[0]?.type;
  // Deserialised types are generic Int_/Float instances, so test their parameters, not classes.
  const inputType =
    child !== undefined && DataType.isInt(child) && child.bitWidth === 8 && !child.isSigned
      ? 'uint8'
      : child !== undefined && DataType.isFloat(child) && child.precision === Precision.SINGLE
        ? 'float32'
        : undefined;
  if (inputType === undefined) throw new DatasetFormatError(`${file}: input values must be uint8 or float32, found ${String(child)}`);
  try {
    const info = DatasetInfoSchema.parse({
      inputShape: JSON.parse(md.get(META.inputShape) ?? 'null'),
      layout: md.get(META.layout),
      scaling: JSON.parse(md.get(META.scaling) ?? 'null'),
      classes: JSON.parse(md.get(META.classes) ?? 'null'),
      inputType,
    });
    const listSize = (input.type as { listSize: number }).listSize;
    if (listSize !== inputSize(info)) {
      throw new DatasetFormatError(`${file}: input lists hold ${listSize} values but input_shape ${JSON.stringify(info.inputShape)} needs ${inputSize(info)}`);
    }
    return { info, idType: DataType.isInt(id.type) && id.type.bitWidth === 64 ? 'int64' : 'int32' };
  } catch (err) {
    if (err instanceof DatasetFormatError) throw err;
    throw new DatasetFormatError(`${file}: bad dataset metadata: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** A dataset file's Arrow schema; DatasetFormatError when the file is missing or not Arrow IPC. */
export async function readDatasetFileSchema(path: string): Promise<Schema> {
  try {
    return await readArrowSchema(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DatasetFormatError(`${path}: dataset file not found`);
    throw new DatasetFormatError(`${path}: not a readable Arrow IPC file (${err instanceof Error ? err.message : String(err)})`);
  }
}

/** Writes a dataset file atomically; rows arrive in batches of typed arrays. */
export class DatasetWriter {
  readonly info: DatasetInfo;
  readonly #schema: Schema;
  readonly #file: AtomicArrowFileWriter;
  readonly #D: number;
  readonly #idType: 'int32' | 'int64';
  readonly #source: boolean;

  private constructor(path: string, info: DatasetInfo, idType: 'int32' | 'int64', source: boolean) {
    this.info = info;
    this.#idType = idType;
    this.#source = source;
    this.#schema = datasetSchema(info, idType, { source });
    this.#D = inputSize(info);
    this.#file = new AtomicArrowFileWriter(path);
  }

  /** `source: true` adds the `source` column: every append then gives one string per row. */
  static create(path: string, info: DatasetInfo, options: { idType?: 'int32' | 'int64'; source?: boolean } = {}): DatasetWriter {
    return new DatasetWriter(path, DatasetInfoSchema.parse(info), options.idType ?? 'int32', options.source ?? false);
  }

  async append(batch: { ids: Ids; inputs: Float32Array | Uint8Array; labels: Int32Array; sources?: readonly string[] }): Promise<void> {
    const rows = batch.ids.length;
    if (this.#source && batch.sources?.length !== rows) throw new RangeError(`this dataset has a source column: give ${rows} sources, one per row`);
    if (!this.#source && batch.sources !== undefined) throw new TypeError('this dataset has no source column (create it with { source: true })');
    if (batch.ids instanceof BigInt64Array !== (this.#idType === 'int64')) {
      throw new TypeError(`ids must be ${this.#idType === 'int64' ? 'BigInt64Array' : 'Int32Array'}`);
    }
    if (batch.inputs.length !== rows * this.#D)
      throw new RangeError(`inputs hold ${batch.inputs.length} values; ${rows} rows × ${this.#D} needs ${rows * this.#D}`);
    if (batch.labels.length !== rows) throw new RangeError(`labels hold ${batch.labels.length} values for ${rows} rows`);
    const isU8 = batch.inputs instanceof Uint8Array;
    if (isU8 !== (this.info.inputType === 'uint8')) throw new TypeError(`inputs must be ${this.info.inputType}`);
    const C = this.info.classes.length;
    for (let i = 0; i < rows; i++) {
      const l = batch.labels[i]!;
      if (l < -1 || l >= C) throw new RangeError(`row ${i}: label ${l} is outside [0, ${C}) (use -1 for unlabelled)`);
    }
    await this.#file.write(
      recordBatch(this.#schema, [
        idData(batch.ids),
        fixedSizeListData(this.#D, isU8 ? new Uint8() : new Float32(), batch.inputs),
        nullableInt32Data(batch.labels),
        ...(this.#source ? [utf8Data(batch.sources!)] : []),
      ]),
    );
  }

  /** Finish the file; returns its fingerprint (sha256 of its bytes) and row count. */
  async close(): Promise<{ path: string; fingerprint: string; rows: number; bytes: number }> {
    const rows = this.#file.rows;
    const written = await this.#file.close();
    return { path: written.path, fingerprint: written.sha256, rows, bytes: written.bytes };
  }

  abort(): Promise<void> {
    return this.#file.abort();
  }
}

/** Reads a dataset file batch by batch; each batch is a set of zero-copy typed-array views. */
export class DatasetReader {
  readonly path: string;
  readonly info: DatasetInfo;
  readonly idType: 'int32' | 'int64';
  #fingerprint: string | undefined;
  #offsets: number[] | undefined;
  /** Read buffers for `readRows`, reused across calls. */
  readonly #buffers: Uint8Array[] = [];

  private constructor(path: string, info: DatasetInfo, idType: 'int32' | 'int64') {
    this.path = path;
    this.info = info;
    this.idType = idType;
  }

  static async open(path: string): Promise<DatasetReader> {
    const { info, idType } = parseDatasetSchema(await readDatasetFileSchema(path), path);
    return new DatasetReader(path, info, idType);
  }

  get inputSize(): number {
    return inputSize(this.info);
  }

  /** sha256 of the file's bytes: the dataset's identity in cache keys. Computed once. */
  async fingerprint(): Promise<string> {
    this.#fingerprint ??= (await sha256File(this.path)).sha256;
    return this.#fingerprint;
  }

  /**
   * The file's batches in order. With `from`, reading starts at the record batch holding that
   * row (random access through the file footer; see `batchStart`). With `reuse`, every batch is
   * read into the same buffer, so a batch's arrays are valid only until the next one is
   * requested — for a consumer that copies rows out first (readArrowFileReusing says why).
   */
  async *batches(options: { from?: number; reuse?: boolean } = {}): AsyncGenerator<DatasetBatch, void, undefined> {
    const from = options.from ?? 0;
    const first = from === 0 ? 0 : await this.#batchOf(from);
    const source =
      options.reuse === true ? readArrowFileReusing(this.path, first) : first === 0 ? readArrowFile(this.path) : readArrowFileFrom(this.path, first);
    for await (const batch of source) {
      const ids = primitiveColumn<Ids>(batch, 'id', this.path);
      const inputs = listColumn<Float32Array | Uint8Array>(batch, 'input', this.path).values;
      const labels = nullableInt32Column(batch, 'label', this.path);
      yield { rows: batch.numRows, ids, inputs, labels };
    }
  }

  /** Whether the file has a `source` column (imported from a folder or a table). */
  async hasSource(): Promise<boolean> {
    return (await readArrowSchema(this.path)).fields.some((f) => f.name === 'source');
  }

  /** The `source` column, batch by batch (a string per row); a DatasetFormatError if the file has none. */
  async *sources(): AsyncGenerator<string[], void, undefined> {
    if (!(await this.hasSource())) throw new DatasetFormatError(`${this.path}: no source column (it was not imported from a folder or a table)`);
    for await (const batch of readArrowFile(this.path)) yield utf8Column(batch, 'source', this.path);
  }

  /** Rows [start, start + count) in one batch (copied out of the file's record batches). */
  async readRows(start: number, count: number): Promise<DatasetBatch> {
    const total = await this.countRows();
    if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0 && start + count <= total)) {
      throw new RangeError(`${this.path}: rows [${start}, ${start + count}) are outside the dataset's ${total} rows`);
    }
    const D = this.inputSize;
    const ids = this.idType === 'int64' ? new BigInt64Array(count) : new Int32Array(count);
    const inputs = this.info.inputType === 'uint8' ? new Uint8Array(count * D) : new Float32Array(count * D);
    const labels = new Int32Array(count);
    if (count === 0) return { rows: 0, ids, inputs, labels };
    const offsets = await this.batchOffsets();
    const first = await this.#batchOf(start);
    const last = await this.#batchOf(start + count - 1);
    let pos = offsets[first]!;
    let filled = 0;
    const { batches, buffer } = await readArrowBatches(this.path, first, last, this.#buffers.pop());
    for (const rb of batches) {
      const b = {
        ids: primitiveColumn<Ids>(rb, 'id', this.path),
        inputs: listColumn<Float32Array | Uint8Array>(rb, 'input', this.path).values,
        labels: nullableInt32Column(rb, 'label', this.path),
      };
      const s = Math.max(start - pos, 0);
      const e = Math.min(start + count - pos, rb.numRows);
      if (e > s) {
        (ids as Int32Array).set(b.ids.subarray(s, e) as Int32Array, filled);
        (inputs as Float32Array).set(b.inputs.subarray(s * D, e * D) as Float32Array, filled * D);
        labels.set(b.labels.subarray(s, e), filled);
        filled += e - s;
      }
      pos += rb.numRows;
    }
    this.#buffers.push(buffer); // copied out above; concurrent calls each take their own
    return { rows: count, ids, inputs, labels };
  }

  [Symbol.asyncIterator](): AsyncGenerator<DatasetBatch, void, undefined> {
    return this.batches();
  }

  /** First row of each record batch, then the row count (read once, then memoized). */
  async batchOffsets(): Promise<readonly number[]> {
    if (this.#offsets === undefined) {
      const offsets = [0];
      for await (const batch of readArrowFile(this.path)) offsets.push(offsets.at(-1)! + batch.numRows);
      this.#offsets = offsets;
    }
    return this.#offsets;
  }

  async #batchOf(row: number): Promise<number> {
    return segmentOf(await this.batchOffsets(), row, this.path);
  }

  /** First row of the record batch that holds `row`: where `batches({ from: row })` starts. */
  async batchStart(row: number): Promise<number> {
    return (await this.batchOffsets())[await this.#batchOf(row)]!;
  }

  async countRows(): Promise<number> {
    return (await this.batchOffsets()).at(-1)!;
  }
}
