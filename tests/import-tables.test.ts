/**
 * `distillate-server import` on tables: a Hugging Face-style Parquet of Fashion-MNIST (an image
 * struct of PNG bytes and a path, ClassLabel names in the schema metadata) imports bit-identical
 * to the IDX import; CSV numeric columns and a JSON-lines list column become float rows; ragged
 * rows and wrong lengths are skipped with their reason; a column of the wrong type is refused.
 */
import { createRequire } from 'node:module';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as arrow from 'apache-arrow';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_FILES, headDataset, importIdxPair } from '@distillate/shared';
import { importTable } from '@distillate/server';
import { runTs } from './helpers/cli.js';
import { readRows } from './helpers/datasets.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const parquetWasm = createRequire(import.meta.url)('parquet-wasm/node') as {
  Table: { fromIPCStream(ipc: Uint8Array): unknown };
  writeParquet(table: unknown): Uint8Array;
};

/** An Arrow table → Parquet bytes (parquet-wasm: the fixture writer; the importer reads with hyparquet). */
function toParquet(table: arrow.Table): Uint8Array {
  return parquetWasm.writeParquet(parquetWasm.Table.fromIPCStream(arrow.tableToIPC(table, 'stream')));
}

const skipFmnist = skipUnless(FASHION_MNIST_PACKAGE);

describe.skipIf(skipFmnist !== undefined)(titled('Fashion-MNIST as a Hugging Face-style Parquet', skipFmnist), () => {
  it('imports bit-identical to the IDX import, with the class names of the ClassLabel metadata and each image path as its source', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-hf-'));
    const { images, labels } = FASHION_MNIST_FILES.test;
    await importIdxPair({
      images: join(FASHION_MNIST_DEBIAN_DIR, images),
      labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
      out: join(root, 'test.arrow'),
      classes: FASHION_MNIST_CLASSES,
    });
    await headDataset(join(root, 'test.arrow'), join(root, 'idx.arrow'), 500);
    const idx = await readRows<Uint8Array | Float32Array>(join(root, 'idx.arrow'));
    const pngs = await Promise.all(
      idx.inputs.map((p) =>
        sharp(Buffer.from(p), { raw: { width: 28, height: 28, channels: 1 } })
          .png()
          .toBuffer(),
      ),
    );
    const imageType = new arrow.Struct([new arrow.Field('bytes', new arrow.Binary(), true), new arrow.Field('path', new arrow.Utf8(), true)]);
    const builder = arrow.makeBuilder({ type: imageType, nullValues: [null] });
    // The builder's type wants Arrow's row proxy; a plain object with the fields is what it reads.
    const append = builder.append.bind(builder) as unknown as (row: { bytes: Uint8Array; path: string }) => void;
    pngs.forEach((bytes, i) => append({ bytes: new Uint8Array(bytes), path: `${String(i).padStart(4, '0')}.png` }));
    const table = new arrow.Table({ image: builder.finish().toVector(), label: arrow.vectorFromArray(idx.labels.map(BigInt), new arrow.Int64()) });
    table.schema.metadata.set(
      'huggingface',
      JSON.stringify({ info: { features: { image: { _type: 'Image' }, label: { names: FASHION_MNIST_CLASSES, _type: 'ClassLabel' } } } }),
    );
    await writeFile(join(root, 'fmnist.parquet'), toParquet(table));

    const r = await importTable({ table: join(root, 'fmnist.parquet'), out: join(root, 'hf.arrow'), input: ['image'], label: 'label', channels: 1 });
    expect(r).toMatchObject({ imported: 500, skipped: [], input: 'image', inputShape: [28, 28, 1], classes: FASHION_MNIST_CLASSES });
    const got = await readRows<Uint8Array | Float32Array>(join(root, 'hf.arrow'));
    expect(got.classes).toEqual(FASHION_MNIST_CLASSES);
    expect(got.labels).toEqual(idx.labels);
    expect(got.sources).toEqual(idx.inputs.map((_, i) => `${String(i).padStart(4, '0')}.png`));
    got.inputs.forEach((p, i) => expect(p, got.sources[i]).toEqual(idx.inputs[i])); // bit-identical pixels
  });
});

describe('importing tables', () => {
  it('a CSV with a byte-order mark, quoted fields and 200,000 rows: columns in the order --input names them, integer labels up to the largest class', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-csv-'));
    const lines = ['\uFEFFname,a,b,label'];
    for (let i = 0; i < 200_000; i++) lines.push(`"row ${i}, quoted",${i % 7},${-i},${i % 3}`);
    await writeFile(join(root, 'big.csv'), lines.join('\r\n') + '\r\n');
    const r = await importTable({ table: join(root, 'big.csv'), out: join(root, 'big.arrow'), input: ['b', 'a'], label: 'label', key: 'name' });
    expect(r).toMatchObject({ imported: 200_000, input: 'columns', inputShape: [2], classes: ['class-0', 'class-1', 'class-2'], skipped: [] });
    const got = await readRows<Float32Array>(join(root, 'big.arrow'));
    expect(got.sources.slice(0, 2)).toEqual(['row 0, quoted', 'row 1, quoted']);
    expect([...got.inputs[199_999]!]).toEqual([-199_999, 199_999 % 7]);
    expect(got.labels[199_999]).toBe(199_999 % 3);
    // A header that repeats a name: a column is found at its own position (the first of a repeated name).
    await writeFile(join(root, 'dup.csv'), 'a,a,b,label\n1,2,3,0\n4,5,6,1\n');
    const dup = await importTable({ table: join(root, 'dup.csv'), out: join(root, 'dup.arrow'), input: ['b', 'a'], label: 'label' });
    expect(dup.imported).toBe(2);
    expect((await readRows<Float32Array>(join(root, 'dup.arrow'))).inputs.map((x) => [...x])).toEqual([
      [3, 1],
      [6, 4],
    ]);
  });

  it('CSV numeric columns with text labels: float rows, classes from the label texts, ragged rows (too few or too many fields) skipped with their reasons', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-csv-'));
    const csv = ['id,x,y,z,kind', 'a,1,2,3,dog', 'b,4,5,6,cat', 'c,7,8', 'd,0.5,-1,2e3,dog', 'e,1,1,1,', 'f,1,2,3,dog,extra'].join('\n') + '\n';
    await writeFile(join(root, 't.csv'), csv);
    const r = await importTable({ table: join(root, 't.csv'), out: join(root, 't.arrow'), input: ['x', 'y', 'z'], label: 'kind', key: 'id', maxSkipped: 0.5 });
    expect(r).toMatchObject({ imported: 4, input: 'columns', inputShape: [3], classes: ['cat', 'dog'] });
    expect(r.skipped).toEqual([
      { source: 't.csv#2', reason: '3 fields, the header has 5' },
      { source: 't.csv#5', reason: '6 fields, the header has 5' },
    ]);
    const got = await readRows<Uint8Array | Float32Array>(join(root, 't.arrow'));
    expect(got.sources).toEqual(['a', 'b', 'd', 'e']);
    expect(got.labels).toEqual([1, 0, 1, -1]); // an empty label: an unlabelled row
    expect(got.inputs.map((x) => [...x])).toEqual([
      [1, 2, 3],
      [4, 5, 6],
      [0.5, -1, 2000],
      [1, 1, 1],
    ]);
    await expect(importTable({ table: join(root, 't.csv'), out: join(root, 'u.arrow'), input: ['kind'] })).rejects.toThrow(
      /--input kind holds text: it takes an image column/,
    );
    await expect(importTable({ table: join(root, 't.csv'), out: join(root, 'u.arrow'), input: ['w'] })).rejects.toThrow(
      /has no column w \(it has id, x, y, z, kind\)/,
    );
  });

  it('JSON lines with a list column: rows of the first row’s length, others skipped; integer labels named by --classes', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-jsonl-'));
    const lines = [
      { f: [0.1, 0.2], y: 0 },
      { f: [0.3, 0.4], y: 1 },
      { f: [0.5], y: 1 },
      { f: [0.7, 0.8], y: 5 },
      { f: [0.9, 1.0], y: null },
    ];
    // …and a line that is not JSON: skipped with its reason, the rest read (streamed line by line).
    await writeFile(join(root, 't.jsonl'), [...lines.map((l) => JSON.stringify(l)), '{"f": [1, 2], "y": '].join('\n') + '\n');
    const r = await importTable({
      table: join(root, 't.jsonl'),
      out: join(root, 't.arrow'),
      input: ['f'],
      label: 'y',
      classes: ['no', 'yes'],
      maxSkipped: 0.5,
    });
    expect(r).toMatchObject({ imported: 3, input: 'list', inputShape: [2], classes: ['no', 'yes'] });
    expect(r.skipped).toEqual([
      { source: 't.jsonl#2', reason: '1 values, the first row had 2' },
      { source: 't.jsonl#3', reason: 'label 5 is outside the 2 classes' },
      { source: 't.jsonl#5', reason: expect.stringMatching(/^line 6 is not JSON/) as unknown as string },
    ]);
    const got = await readRows<Uint8Array | Float32Array>(join(root, 't.arrow'));
    expect(got.labels).toEqual([0, 1, -1]);
    expect(got.sources).toEqual(['t.jsonl#0', 't.jsonl#1', 't.jsonl#4']);
    expect(Array.from(got.inputs[2]!)).toEqual([Math.fround(0.9), 1]);
  });

  it('a Parquet column of the wrong type is refused in one line; the CLI imports a table and says what it wrote', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-pq-'));
    const table = new arrow.Table({
      name: arrow.vectorFromArray(['a', 'b']),
      v: arrow.vectorFromArray([1.5, 2.5], new arrow.Float64()),
      w: arrow.vectorFromArray([3, 4], new arrow.Float64()),
    });
    await writeFile(join(root, 't.parquet'), toParquet(table));
    await expect(importTable({ table: join(root, 't.parquet'), out: join(root, 'x.arrow'), input: ['name'], classes: ['c'] })).rejects.toThrow(
      /^--input name holds text/,
    );
    const cli = runTs('server/src/bin.ts', [
      'import',
      join(root, 't.parquet'),
      '--out',
      join(root, 'cli.arrow'),
      '--input',
      'v,w',
      '--key',
      'name',
      '--classes',
      'only',
    ]);
    expect(cli.stderr).toBe('');
    expect(cli.stdout.trim()).toMatch(/^2 rows → .*cli\.arrow \(columns \[2\], unlabelled\); skipped 0: .*cli\.import-report\.json$/);
    expect((await readRows<Uint8Array | Float32Array>(join(root, 'cli.arrow'))).sources).toEqual(['a', 'b']);
    const bad = runTs('server/src/bin.ts', ['import', join(root, 't.parquet'), '--out', join(root, 'bad.arrow')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toMatch(/^distillate-server: .*t\.parquet is a table: give --input/);
  });
});
