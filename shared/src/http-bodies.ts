/**
 * Arrow IPC stream bodies of the logits endpoint: a request with one FixedSizeList<Float32>
 * column `input`, and a response with one FixedSizeList<Float32> column `logits`. They live here,
 * next to the file readers and writers, so that only shared imports apache-arrow.
 */
import {
  FixedSizeList,
  Field,
  Float32,
  Table,
  Uint8,
  makeData,
  tableFromIPC,
  tableToIPC,
  RecordBatch,
  RecordBatchReader,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  Int32,
} from 'apache-arrow';
import { datasetSchema, parseDatasetSchema, type DatasetBatch, type DatasetInfo } from './dataset.js';
import { parseTokenSchema, tokenSchema, type TokenBatch, type TokenDatasetInfo } from './text/token-dataset.js';
import { fixedSizeListData, idData, listColumn, nullableInt32Column, nullableInt32Data, primitiveColumn, recordBatch, type Ids } from './internal/arrow-io.js';

export class ArrowBodyError extends Error {
  override readonly name = 'ArrowBodyError';
}

/** Decode an Arrow IPC stream with one FixedSizeList<Float32> column `input`. */
export function decodeInputStream(body: Uint8Array): { inputs: Float32Array; rows: number; size: number } {
  let table: Table;
  try {
    table = tableFromIPC(body);
  } catch (err) {
    throw new ArrowBodyError(`body is not an Arrow IPC stream: ${(err as Error).message}`);
  }
  const col = table.getChild('input');
  const type = col?.type as FixedSizeList | undefined;
  const child = type?.children?.[0]?.type;
  if (
    col === null ||
    col === undefined ||
    !(type instanceof FixedSizeList) ||
    child === undefined ||
    !Float32.isFloat(child) ||
    (child as Float32).precision !== 1
  ) {
    throw new ArrowBodyError('the Arrow stream needs a column "input" of FixedSizeList<Float32>');
  }
  const size = type.listSize;
  const inputs = new Float32Array(table.numRows * size);
  let off = 0;
  for (const data of col.data) {
    const values = data.children[0]!.values as Float32Array;
    const start = (data.offset + data.children[0]!.offset) * size;
    inputs.set(values.subarray(start, start + data.length * size), off);
    off += data.length * size;
  }
  return { inputs, rows: table.numRows, size };
}

/** Encode [rows, classes] logits as an Arrow IPC stream, with the temperature and provider as schema metadata. */
export function encodeLogitsStream(logits: Float32Array, rows: number, classes: number, temperature: number, provider: string): Uint8Array {
  const listType = new FixedSizeList(classes, new Field('item', new Float32(), false));
  const schema = new Schema(
    [new Field('logits', listType, false)],
    new Map([
      ['distillate.temperature', String(temperature)],
      ['distillate.execution_provider', provider],
    ]),
  );
  const child = makeData({ type: new Float32(), length: rows * classes, data: logits });
  const list = makeData({ type: listType, length: rows, child });
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, children: [list] }));
  return tableToIPC(new Table([batch]), 'stream');
}

/**
 * Dataset rows as an Arrow IPC stream with the dataset's own schema and metadata (what a remote
 * worker reads when it has no copy of the dataset).
 */
export function encodeDatasetRows(info: DatasetInfo, batch: DatasetBatch): Uint8Array {
  const idType = batch.ids instanceof BigInt64Array ? 'int64' : 'int32';
  const D = batch.inputs.length / Math.max(batch.rows, 1);
  const schema = datasetSchema(info, idType);
  const rb = recordBatch(schema, [
    idData(batch.ids),
    fixedSizeListData(D, batch.inputs instanceof Uint8Array ? new Uint8() : new Float32(), batch.inputs),
    nullableInt32Data(batch.labels),
  ]);
  return RecordBatchStreamWriter.writeAll([rb]).toUint8Array(true);
}

/** A token dataset's blocks as an Arrow IPC stream: ids and blocks, with the dataset's metadata (tokenizer, block). */
export function encodeTokenRows(info: TokenDatasetInfo, batch: TokenBatch): Uint8Array {
  const rb = recordBatch(tokenSchema(info, true), [idData(batch.ids), fixedSizeListData(info.block, new Int32(), batch.tokens)]);
  return RecordBatchStreamWriter.writeAll([rb]).toUint8Array(true);
}

function openStream(body: Uint8Array): RecordBatchReader {
  try {
    const reader = RecordBatchReader.from(body);
    reader.open();
    return reader;
  } catch (err) {
    throw new ArrowBodyError(`body is not an Arrow IPC stream: ${(err as Error).message}`);
  }
}

/** Decode `encodeTokenRows`: the token dataset's description and its blocks in one batch (copied). */
export function decodeTokenRows(body: Uint8Array): { info: TokenDatasetInfo; batch: TokenBatch } {
  const reader = openStream(body);
  const info = parseTokenSchema(reader.schema, 'token rows');
  const parts = [...reader].map((rb) => ({
    ids: primitiveColumn<Int32Array>(rb, 'id', 'token rows'),
    tokens: listColumn<Int32Array>(rb, 'input', 'token rows').values,
  }));
  const rows = parts.reduce((n, p) => n + p.ids.length, 0);
  const ids = new Int32Array(rows);
  const tokens = new Int32Array(rows * info.block);
  let off = 0;
  for (const p of parts) {
    ids.set(p.ids, off);
    tokens.set(p.tokens, off * info.block);
    off += p.ids.length;
  }
  return { info, batch: { rows, ids, tokens } };
}

/** Decode `encodeDatasetRows`: the dataset description and the rows in one batch (copied). */
export function decodeDatasetRows(body: Uint8Array): { info: DatasetInfo; batch: DatasetBatch } {
  const reader = openStream(body);
  const { info } = parseDatasetSchema(reader.schema, 'dataset rows');
  const parts: DatasetBatch[] = [];
  for (const rb of reader) {
    parts.push({
      rows: rb.numRows,
      ids: primitiveColumn<Ids>(rb, 'id', 'dataset rows'),
      inputs: listColumn<Float32Array | Uint8Array>(rb, 'input', 'dataset rows').values,
      labels: nullableInt32Column(rb, 'label', 'dataset rows'),
    });
  }
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const first = parts[0];
  const D = rows === 0 ? 0 : first!.inputs.length / first!.rows;
  const ids = first?.ids instanceof BigInt64Array ? new BigInt64Array(rows) : new Int32Array(rows);
  const inputs = info.inputType === 'uint8' ? new Uint8Array(rows * D) : new Float32Array(rows * D);
  const labels = new Int32Array(rows);
  let off = 0;
  for (const p of parts) {
    (ids as Int32Array).set(p.ids as Int32Array, off);
    (inputs as Float32Array).set(p.inputs as Float32Array, off * D);
    labels.set(p.labels, off);
    off += p.rows;
  }
  return { info, batch: { rows, ids, inputs, labels } };
}
