/**
 * Arrow IPC stream bodies of the logits endpoint: a request with one FixedSizeList<Float32>
 * column `input`, and a response with one FixedSizeList<Float32> column `logits`. They live here,
 * next to the file readers and writers, so that only shared imports apache-arrow.
 */
import { FixedSizeList, Field, Float32, Table, makeData, tableFromIPC, tableToIPC, RecordBatch, Schema, Struct } from 'apache-arrow';

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
  if (col === null || col === undefined || !(type instanceof FixedSizeList) || child === undefined || !Float32.isFloat(child) || (child as Float32).precision !== 1) {
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
  const schema = new Schema([new Field('logits', listType, false)], new Map([['distillate.temperature', String(temperature)], ['distillate.execution_provider', provider]]));
  const child = makeData({ type: new Float32(), length: rows * classes, data: logits });
  const list = makeData({ type: listType, length: rows, child });
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, children: [list] }));
  return tableToIPC(new Table([batch]), 'stream');
}
