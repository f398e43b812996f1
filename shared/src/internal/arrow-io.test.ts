/**
 * The two places arrow-io leans on apache-arrow beyond its plain reading and writing API, pinned
 * to the library's own behaviour so an upgrade that changes it fails here: the writer's byte
 * count (buffer recycling while shards stream to disk) and the hand-spliced IPC stream of the
 * fast batch reader.
 */
import { mkdtemp, readdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float32, Int32, RecordBatchReader, Schema, type RecordBatch } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import {
  AtomicArrowFileWriter,
  CountingFileWriter,
  fixedSizeListData,
  idData,
  listColumn,
  listType,
  primitiveColumn,
  readArrowBatches,
  readArrowFileFrom,
  readArrowFileReusing,
  recordBatch,
} from './arrow-io.js';

const schema = new Schema([new Field('id', new Int32(), false), new Field('x', listType(3, new Float32()), false)]);
function batch(first: number, rows: number) {
  const ids = Int32Array.from({ length: rows }, (_, i) => first + i);
  const x = Float32Array.from({ length: rows * 3 }, (_, i) => Math.sin(first + i));
  return recordBatch(schema, [idData(ids), fixedSizeListData(3, new Float32(), x)]);
}

async function fileOf(sizes: number[]): Promise<{ bytes: Uint8Array; ends: number[] }> {
  const writer = new CountingFileWriter();
  const ends: number[] = [];
  let first = 0;
  for (const rows of sizes) {
    writer.write(batch(first, rows));
    ends.push(writer.bytesWritten);
    first += rows;
  }
  writer.finish();
  return { bytes: writer.toUint8Array(true), ends };
}

describe('arrow-io against apache-arrow', () => {
  it("CountingFileWriter's count is where each record batch ends in the file the writer yields", async () => {
    const { bytes, ends } = await fileOf([5, 300, 1, 64]);
    const reader = RecordBatchReader.from(bytes);
    reader.open();
    if (!reader.isFile() || reader.footer === null) throw new Error('not an Arrow IPC file');
    const footer = reader.footer;
    ends.forEach((end, i) => {
      const block = footer.getRecordBatch(i)!;
      expect(end, `batch ${i}`).toBe(Number(block.offset) + block.metaDataLength + Number(block.bodyLength));
    });
    expect(bytes.length).toBeGreaterThan(ends.at(-1)!); // the footer follows
  });

  it('readArrowBatches gives the same batches as the reader’s own random access', async () => {
    const { bytes } = await fileOf([7, 100, 33, 2, 50]);
    const path = join(await mkdtemp(join(tmpdir(), 'arrow-io-')), 'f.arrow');
    await writeFile(path, bytes);
    for (const [first, last] of [
      [0, 4],
      [1, 3],
      [4, 4],
    ] as const) {
      const fast = (await readArrowBatches(path, first, last)).batches;
      const slow: RecordBatch[] = [];
      for await (const b of readArrowFileFrom(path, first)) slow.push(b);
      expect(fast).toHaveLength(last - first + 1);
      fast.forEach((b, i) => {
        expect(b.numRows).toBe(slow[i]!.numRows);
        expect(primitiveColumn<Int32Array>(b, 'id', path)).toEqual(primitiveColumn<Int32Array>(slow[i]!, 'id', path));
        expect(listColumn<Float32Array>(b, 'x', path).values).toEqual(listColumn<Float32Array>(slow[i]!, 'x', path).values);
      });
    }
  });

  it('readArrowFileReusing gives the same batches as the reader’s own, from any first batch, each read into the one buffer', async () => {
    const { bytes } = await fileOf([64, 64, 64, 10]);
    const path = join(await mkdtemp(join(tmpdir(), 'arrow-io-')), 'f.arrow');
    await writeFile(path, bytes);
    for (const first of [0, 2]) {
      const slow: RecordBatch[] = [];
      for await (const b of readArrowFileFrom(path, first)) slow.push(b);
      const buffers = new Set<ArrayBufferLike>();
      let i = 0;
      for await (const b of readArrowFileReusing(path, first)) {
        const x = listColumn<Float32Array>(b, 'x', path).values;
        // Compared before the next read, which overwrites it.
        expect(primitiveColumn<Int32Array>(b, 'id', path)).toEqual(primitiveColumn<Int32Array>(slow[i]!, 'id', path));
        expect(x).toEqual(listColumn<Float32Array>(slow[i]!, 'x', path).values);
        buffers.add(x.buffer);
        i++;
      }
      expect(i).toBe(slow.length);
      expect(buffers.size).toBe(1);
    }
  });

  it('a write that fails on the disk reports the disk error (naming the file), never the byte queue closing behind it', async () => {
    // /dev/full fails every write with ENOSPC: the temp file is a link to it.
    const dir = await mkdtemp(join(tmpdir(), 'arrow-io-'));
    const path = join(dir, 'f.arrow');
    await symlink('/dev/full', `${path}.tmp-${process.pid}`);
    const writer = new AtomicArrowFileWriter(path, { fsync: false });
    let error: unknown;
    // Each turn lets the drain loop run, so some write lands after the disk write failed.
    for (let i = 0; i < 200 && error === undefined; i++) {
      try {
        await writer.write(batch(i * 64, 64));
      } catch (err) {
        error = err;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(String(error)).toMatch(new RegExp(`${path}: ENOSPC`));
    await expect(writer.close()).rejects.toThrow(/ENOSPC/);
    await writer.abort();
    expect(await readdir(dir)).toEqual([]);
  });
});
