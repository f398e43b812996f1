/**
 * Low-level Arrow IPC file I/O shared by the dataset and logit-cache formats: atomic shard
 * writing with a running sha256, streaming reads over a FileHandle, and zero-copy column views.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  type Data,
  Field,
  FixedSizeList,
  List,
  type Float16,
  type Float32,
  Int32,
  Int64,
  RecordBatch,
  RecordBatchFileWriter,
  RecordBatchReader,
  type RecordBatchFileReader,
  MessageReader,
  type Schema,
  Table,
  tableToIPC,
  Struct,
  type Uint16,
  type Uint32,
  type Uint8,
  makeData,
  Utf8,
  type DataType,
} from 'apache-arrow';

export type Ids = Int32Array | BigInt64Array;

/** Fsync a directory so that a rename inside it survives a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** An I/O error that names the file: `path: ENOSPC: no space left on device, write` (code kept). */
export function fileError(path: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  const out = new Error(e.message?.includes(path) ? e.message : `${path}: ${e.message ?? String(err)}`) as NodeJS.ErrnoException;
  if (e.code !== undefined) out.code = e.code;
  return out;
}

/**
 * Write a small file atomically: temp file, fsync, rename, fsync the directory. On failure (a
 * full disk, say) the temp file is removed and the error names the file. `fsync: false` keeps
 * the atomic rename and skips both fsyncs.
 */
export async function writeFileAtomic(path: string, contents: string | Uint8Array, options: { fsync?: boolean } = {}): Promise<void> {
  const fsync = options.fsync ?? true;
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(contents);
      if (fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw fileError(path, err);
  }
  if (fsync) await fsyncDir(dirname(path));
}

/**
 * Remove `*.tmp-<pid>` files left in `dir` by processes that no longer run (a crash or a full
 * disk mid-write); a live writer's temp files stay.
 */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = /\.tmp-(\d+)$/.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    let alive = pid === process.pid;
    if (!alive) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (alive) continue;
    await rm(join(dir, name), { force: true });
    removed.push(join(dir, name));
  }
  return removed;
}

export async function sha256File(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

export interface WrittenFile {
  readonly path: string;
  readonly sha256: string;
  readonly bytes: number;
}

/**
 * Arrow's file writer, counting the bytes it has serialised. The count is the writer's own
 * `_position`, a *protected* member (part of its subclassing surface, so TypeScript checks this
 * access on every upgrade) that it advances synchronously in `write()`. The public alternative,
 * copying every batch before handing it over so its buffers can be recycled at once, costs a
 * full pass over the data; arrow-io.test.ts fails if the count ever stops matching the bytes
 * the writer yields.
 */
export class CountingFileWriter extends RecordBatchFileWriter {
  /** Bytes serialised so far (yielded to the byte stream, or about to be). */
  get bytesWritten(): number {
    return this._position;
  }
}

/** Bytes the Arrow writer may hold before `write()` waits for the disk to catch up. */
const HIGH_WATER_BYTES = 32 << 20;

/**
 * Streams record batches into an Arrow IPC *file* at `path`. Bytes go to `path.tmp-<pid>`
 * and through a running sha256; `close()` fsyncs and renames, so `path` either does not
 * exist or is complete. `abort()` removes the temp file.
 *
 * Arrow's writer serialises into an in-memory byte queue; a background loop drains that queue
 * to the file. `write()` awaits when more than HIGH_WATER_BYTES are queued, so memory stays
 * bounded and serialisation overlaps with disk writes.
 */
export class AtomicArrowFileWriter {
  readonly path: string;
  readonly #tmp: string;
  readonly #writer = new CountingFileWriter();
  readonly #hash = createHash('sha256');
  readonly #done: Promise<void>;
  #flushed = 0;
  #rows = 0;
  #wake: (() => void) | undefined;
  #failed: unknown;
  /** Callbacks to run once the file holds every byte up to `end` (buffer recycling). */
  readonly #onFlushed: Array<{ end: number; cb: () => void }> = [];

  readonly #fsync: boolean;

  /**
   * `fsync: false` keeps the atomic rename (a killed process never leaves a partial file) but
   * skips the flush to the device, so a power loss may lose recent files. Readers still verify
   * hashes, so such a loss is detected, never silently read.
   */
  constructor(path: string, options: { fsync?: boolean } = {}) {
    this.path = path;
    this.#tmp = `${path}.tmp-${process.pid}`;
    this.#fsync = options.fsync ?? true;
    this.#done = this.#drain();
    // Failures surface through write()/close()/abort(), never as an unhandled rejection.
    this.#done.catch((err: unknown) => {
      this.#failed = err;
      this.#wake?.();
    });
  }

  async #drain(): Promise<void> {
    try {
      await this.#drainTo(await open(this.#tmp, 'w'));
    } catch (err) {
      throw fileError(this.path, err);
    }
  }

  async #drainTo(fh: FileHandle): Promise<void> {
    try {
      for await (const chunk of this.#writer as AsyncIterable<Uint8Array>) {
        this.#hash.update(chunk);
        let off = 0;
        while (off < chunk.byteLength) off += (await fh.write(chunk, off)).bytesWritten;
        this.#flushed += chunk.byteLength;
        while (this.#onFlushed.length > 0 && this.#onFlushed[0]!.end <= this.#flushed) this.#onFlushed.shift()!.cb();
        this.#wake?.();
      }
      if (this.#fsync) await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /**
   * The error to report when the Arrow writer refuses a call. The drain loop closes the writer's
   * byte queue as soon as a disk write fails, before its error is recorded (the file handle still
   * closes in between), so the writer's "AsyncQueue is closed" usually means the drain died first
   * (a full disk): its error says why, not the writer's complaint.
   */
  async #cause(err: unknown): Promise<unknown> {
    await this.#done.catch(() => undefined);
    return this.#failed ?? err;
  }

  /** Bytes serialised by the Arrow writer so far. */
  get #position(): number {
    return this.#writer.bytesWritten;
  }

  get rows(): number {
    return this.#rows;
  }

  /**
   * Queue a batch. The Arrow writer keeps *views* of the batch's buffers until they reach the
   * file, so a caller that wants to reuse them passes `onFlushed`, called once that happened.
   */
  async write(batch: RecordBatch, onFlushed?: () => void): Promise<void> {
    if (this.#failed !== undefined) throw this.#failed;
    try {
      this.#writer.write(batch);
    } catch (err) {
      throw await this.#cause(err);
    }
    this.#rows += batch.numRows;
    if (onFlushed !== undefined) this.#onFlushed.push({ end: this.#position, cb: onFlushed });
    while (this.#position - this.#flushed > HIGH_WATER_BYTES && this.#failed === undefined) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    if (this.#failed !== undefined) throw this.#failed;
  }

  async close(): Promise<WrittenFile> {
    if (this.#failed !== undefined) throw this.#failed;
    try {
      this.#writer.finish();
      this.#writer.close();
    } catch (err) {
      throw await this.#cause(err);
    }
    await this.#done;
    await rename(this.#tmp, this.path);
    if (this.#fsync) await fsyncDir(dirname(this.path));
    return { path: this.path, sha256: this.#hash.digest('hex'), bytes: this.#flushed };
  }

  async abort(): Promise<void> {
    // Closing (rather than abort(), which leaves the byte queue's readers pending) lets the
    // drain loop finish; the temp file is then deleted, so nothing visible remains.
    try {
      this.#writer.close();
    } catch {
      // already closed or failed: the drain promise settles either way
    }
    await this.#done.catch(() => undefined);
    await rm(this.#tmp, { force: true });
  }
}

/** Iterate the record batches of an Arrow IPC file with bounded memory (one batch at a time). */
export async function* readArrowFile(path: string): AsyncGenerator<RecordBatch, void, undefined> {
  const fh = await open(path, 'r');
  try {
    const reader = await RecordBatchReader.from(fh);
    for await (const batch of reader) yield batch;
  } finally {
    await fh.close();
  }
}

/**
 * Random access: the record batches of an Arrow IPC file from index `first` on, read through
 * the file footer's block index (earlier batches are not read).
 */
export async function* readArrowFileFrom(path: string, first: number): AsyncGenerator<RecordBatch, void, undefined> {
  const fh = await open(path, 'r');
  try {
    const reader = await RecordBatchReader.from(fh);
    await reader.open();
    if (!reader.isFile()) throw new Error(`${path}: not an Arrow IPC file (no footer)`);
    for (let i = first; i < reader.numRecordBatches; i++) {
      const batch = await reader.readRecordBatch(i);
      if (batch === null) throw new Error(`${path}: record batch ${i} is missing`);
      yield batch;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Read a whole file with large positional reads. fs.promises.readFile reads in 512 KiB steps,
 * one thread-pool round trip each, which is several times slower for large files.
 */
export async function readWholeFile(path: string, reuse?: Buffer): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const buf = reuse !== undefined && reuse.length >= size ? reuse.subarray(0, size) : Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, Math.min(size - off, 64 << 20), off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return off === size ? buf : buf.subarray(0, off);
  } finally {
    await fh.close();
  }
}

/**
 * Iterate the record batches of an Arrow IPC file already in memory. Batches are zero-copy
 * views of `bytes`.
 */
export function* readArrowBytes(bytes: Uint8Array): Generator<RecordBatch, void, undefined> {
  const reader = RecordBatchReader.from(bytes);
  for (const batch of reader) yield batch;
}

/** An open Arrow IPC file, ready for spliced reads: its footer, and its schema as a stream's first message. */
interface SpliceSource {
  readonly fh: FileHandle;
  readonly path: string;
  readonly footer: NonNullable<RecordBatchFileReader['footer']>;
  /** The schema message bytes (without the end-of-stream marker). */
  readonly head: Uint8Array;
}

async function openSpliced(path: string): Promise<SpliceSource> {
  const fh = await open(path, 'r');
  try {
    const reader = await RecordBatchReader.from(fh);
    await reader.open();
    const footer = reader.isFile() ? reader.footer : null;
    if (footer === null) throw new Error(`${path}: not an Arrow IPC file (no footer)`);
    if (footer.numDictionaries > 0) throw new Error(`${path}: dictionary-encoded files are not supported here`);
    // Arrow's file writer keeps the schema in the footer only: serialise it as a stream's first message.
    const stream = tableToIPC(new Table(reader.schema), 'stream');
    return { fh, path, footer, head: stream.subarray(0, stream.length - 8) };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/**
 * Record batches `[first, last]` of an open file with one positional read into `reuse` (or a
 * new buffer when it is too small), decoded from memory as an IPC stream: the schema message,
 * then the batches' bytes (a file's blocks are stream messages). The batches are views of the
 * returned buffer.
 */
async function readSpliced(src: SpliceSource, first: number, last: number, reuse?: Uint8Array): Promise<{ batches: RecordBatch[]; buffer: Uint8Array }> {
  const firstBlock = src.footer.getRecordBatch(first);
  const lastBlock = src.footer.getRecordBatch(last);
  if (firstBlock == null || lastBlock == null) throw new Error(`${src.path}: record batches ${first}–${last} are missing`);
  const start = Number(firstBlock.offset);
  const end = Number(lastBlock.offset) + firstBlockSpan(lastBlock);
  // A fresh multi-megabyte buffer costs more than the read (page faults): reuse the caller's.
  const size = src.head.length + (end - start);
  const buffer = reuse !== undefined && reuse.length >= size ? reuse : new Uint8Array(size);
  const bytes = buffer.subarray(0, size);
  bytes.set(src.head);
  await readFully(src.fh, bytes.subarray(src.head.length), start);
  return { batches: [...RecordBatchReader.from(bytes)], buffer };
}

/**
 * Read record batches `[first, last]` of an Arrow IPC file with one positional read into a
 * reusable buffer, and decode them from memory as an IPC stream (the schema message, then the
 * batches' bytes). Public APIs only (the footer's block index, tableToIPC), spliced per the IPC
 * format (a file's blocks are stream messages; a stream ends with an 8-byte end marker);
 * arrow-io.test.ts pins it to the reader's own random access, so a library change that broke
 * the splice fails there rather than here. Arrow's own async file reader takes about 22 ms for a 6 MB batch here, almost
 * all of it in allocating a fresh buffer per read; this takes about 2 ms. The batches are views
 * of `buffer`: copy out what you keep before reusing it.
 */
export async function readArrowBatches(path: string, first: number, last: number, reuse?: Uint8Array): Promise<{ batches: RecordBatch[]; buffer: Uint8Array }> {
  const src = await openSpliced(path);
  try {
    return await readSpliced(src, first, last, reuse);
  } finally {
    await src.fh.close();
  }
}

/**
 * The record batches of an Arrow IPC file from index `first` on, each read into one buffer that
 * the next read overwrites (readArrowBatches, one batch at a time): **a batch's columns are
 * valid only until the next batch is requested**. For a consumer that copies rows out before
 * asking for more (the trainer's data path). A pass over 60,000 28×28 rows took 36.5 ms this
 * way against 74.2 ms with Arrow's reader, which allocates a buffer per batch (`bench:ort` row
 * dataset_pass_ms_reused_buffer: on these VMs every new page is faulted in), and those buffers
 * are garbage that V8 lets grow by tens of MB before it collects them: peak RSS that grew with
 * the dataset. Files with dictionary batches are refused (datasets have none).
 */
export async function* readArrowFileReusing(path: string, first = 0): AsyncGenerator<RecordBatch, void, undefined> {
  const src = await openSpliced(path);
  try {
    let buffer: Uint8Array | undefined;
    for (let i = first; i < src.footer.numRecordBatches; i++) {
      const read = await readSpliced(src, i, i, buffer);
      buffer = read.buffer;
      yield* read.batches;
    }
  } finally {
    await src.fh.close();
  }
}

function firstBlockSpan(block: { metaDataLength: number; bodyLength: number | bigint }): number {
  return block.metaDataLength + Number(block.bodyLength);
}

async function readFully(fh: FileHandle, into: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < into.length) {
    const { bytesRead } = await fh.read(into, off, into.length - off, position + off);
    if (bytesRead === 0) throw new Error('unexpected end of file');
    off += bytesRead;
  }
}

/**
 * The metadata of a serialised Arrow schema message, e.g. the base64 `ARROW:schema` value that
 * Parquet writers from the Arrow family embed (where a Hugging Face export may keep its
 * `huggingface` features). An empty map if the bytes hold no schema.
 */
export function ipcSchemaMetadata(bytes: Uint8Array): Map<string, string> {
  const message = new MessageReader(bytes).readMessage();
  if (message === null || !message.isSchema()) return new Map();
  return new Map(message.header().metadata);
}

/** Open an Arrow IPC file just far enough to read its schema. */
export async function readArrowSchema(path: string): Promise<Schema> {
  const fh = await open(path, 'r');
  try {
    const reader = await RecordBatchReader.from(fh);
    await reader.open();
    const schema = reader.schema;
    await reader.cancel();
    return schema;
  } finally {
    await fh.close();
  }
}

// ---------- column construction from typed arrays (no per-row builders) ----------

export function idData(ids: Ids): Data<Int32 | Int64> {
  return ids instanceof BigInt64Array
    ? makeData({ type: new Int64(), length: ids.length, data: ids })
    : makeData({ type: new Int32(), length: ids.length, data: ids });
}

export type ListValueType = Float32 | Float16 | Uint8 | Uint16 | Uint32 | Int32;

export function listType(size: number, valueType: ListValueType): FixedSizeList<ListValueType> {
  return new FixedSizeList(size, new Field('item', valueType, false));
}

export function fixedSizeListData(
  size: number,
  valueType: ListValueType,
  values: Float32Array | Uint16Array | Uint8Array | Uint32Array | Int32Array,
): Data<FixedSizeList> {
  if (values.length % size !== 0) throw new RangeError(`${values.length} values do not split into lists of ${size}`);
  const length = values.length / size;
  const child = makeData({ type: valueType, length: values.length, data: values } as never) as unknown as Data<ListValueType>;
  return makeData({ type: listType(size, valueType), length, child });
}

/** A variable-length List column: row i holds values[offsets[i], offsets[i + 1]). */
export function listData(
  valueType: ListValueType,
  offsets: Int32Array,
  values: Float32Array | Uint16Array | Uint8Array | Uint32Array | Int32Array,
): Data<List> {
  const length = offsets.length - 1;
  if (offsets[length] !== values.length) throw new RangeError(`list offsets end at ${offsets[length]} but there are ${values.length} values`);
  const child = makeData({ type: valueType, length: values.length, data: values } as never) as unknown as Data<ListValueType>;
  return makeData({ type: new List(new Field('item', valueType, false)), length, valueOffsets: offsets, child }) as Data<List>;
}

/** Int32 column where -1 means null (a validity bitmap is written only when nulls exist). */
export function nullableInt32Data(values: Int32Array, nullValue = -1): Data<Int32> {
  let nullCount = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === nullValue) nullCount++;
  if (nullCount === 0) return makeData({ type: new Int32(), length: values.length, data: values });
  const bitmap = new Uint8Array(Math.ceil(values.length / 8));
  for (let i = 0; i < values.length; i++) if (values[i] !== nullValue) bitmap[i >> 3]! |= 1 << (i & 7);
  return makeData({ type: new Int32(), length: values.length, data: values, nullBitmap: bitmap, nullCount });
}

/** A Utf8 column from strings: offsets and bytes built directly (no per-row builder). */
export function utf8Data(values: readonly string[]): Data<Utf8> {
  const encoder = new TextEncoder();
  const encoded = values.map((v) => encoder.encode(v));
  const offsets = new Int32Array(values.length + 1);
  for (let i = 0; i < encoded.length; i++) offsets[i + 1] = offsets[i]! + encoded[i]!.length;
  const bytes = new Uint8Array(offsets[values.length]!);
  encoded.forEach((e, i) => bytes.set(e, offsets[i]!));
  return makeData({ type: new Utf8(), length: values.length, valueOffsets: offsets, data: bytes });
}

export function recordBatch(schema: Schema, columns: Data[]): RecordBatch {
  const length = columns[0]?.length ?? 0;
  for (const [i, c] of columns.entries()) {
    if (c.length !== length) throw new RangeError(`column ${schema.fields[i]?.name} has ${c.length} rows, expected ${length}`);
  }
  const struct = makeData({ type: new Struct(schema.fields), length, children: columns, nullCount: 0 });
  return new RecordBatch(schema, struct);
}

// ---------- zero-copy column views ----------

function columnData(batch: RecordBatch, name: string, file: string): Data {
  const vector = batch.getChild(name);
  if (vector === null) throw new Error(`${file}: missing column "${name}"`);
  if (vector.data.length !== 1) throw new Error(`${file}: column "${name}" has ${vector.data.length} chunks in one batch`);
  return vector.data[0]!;
}

type Typed = Int32Array | BigInt64Array | Float32Array | Uint16Array | Uint8Array | Uint32Array;

function view<T extends Typed>(values: T, start: number, length: number): T {
  return values.subarray(start, start + length) as T;
}

/** A primitive column as a typed-array view. */
export function primitiveColumn<T extends Typed>(batch: RecordBatch, name: string, file: string): T {
  const data = columnData(batch, name, file);
  return view(data.values as T, data.offset, data.length);
}

/** A FixedSizeList column's flat values as a typed-array view, plus the list size. */
export function listColumn<T extends Typed>(batch: RecordBatch, name: string, file: string): { values: T; size: number; type: DataType } {
  const data = columnData(batch, name, file);
  const type = data.type as FixedSizeList;
  const size = type.listSize;
  const child = data.children[0];
  if (child === undefined) throw new Error(`${file}: column "${name}" is not a list`);
  return { values: view(child.values as T, (child.offset + data.offset) * size, data.length * size), size, type: child.type };
}

/** A variable-length List column's offsets (rebased to 0) and its values as a typed-array view. */
export function varListColumn<T extends Typed>(batch: RecordBatch, name: string, file: string): { offsets: Int32Array; values: T } {
  const data = columnData(batch, name, file);
  const child = data.children[0];
  if (child === undefined || data.valueOffsets === undefined) throw new Error(`${file}: column "${name}" is not a list`);
  const raw = (data.valueOffsets as Int32Array).subarray(data.offset, data.offset + data.length + 1);
  const base = raw[0]!;
  const offsets = base === 0 ? raw : raw.map((o) => o - base);
  return { offsets, values: view(child.values as T, child.offset + base, raw[data.length]! - base) };
}

/** A nullable Int32 column with nulls mapped to `nullValue` (copies only when nulls exist). */
export function nullableInt32Column(batch: RecordBatch, name: string, file: string, nullValue = -1): Int32Array {
  const data = columnData(batch, name, file) as Data<Int32>;
  const values = view(data.values, data.offset, data.length);
  if (data.nullCount === 0 || data.nullBitmap === undefined || data.nullBitmap.length === 0) return values;
  const out = values.slice();
  const bitmap = data.nullBitmap;
  for (let i = 0; i < out.length; i++) {
    const bit = data.offset + i;
    if ((bitmap[bit >> 3]! & (1 << (bit & 7))) === 0) out[i] = nullValue;
  }
  return out;
}

/** A Utf8 column decoded to strings (offsets walked directly). */
export function utf8Column(batch: RecordBatch, name: string, file: string): string[] {
  const data = columnData(batch, name, file) as Data<Utf8>;
  const offsets = data.valueOffsets;
  const bytes = data.values;
  const decoder = new TextDecoder();
  const out = new Array<string>(data.length);
  for (let i = 0; i < data.length; i++) out[i] = decoder.decode(bytes.subarray(offsets[data.offset + i]!, offsets[data.offset + i + 1]!));
  return out;
}

export function idAt(ids: Ids, i: number): number {
  return Number(ids[i]!);
}
