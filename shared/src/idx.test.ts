import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader } from './dataset.js';
import { importIdxPair } from './fashion-mnist.js';
import { IdxFormatError, parseIdx, readIdxPair } from './idx.js';

function idx(magic: number, dims: number[], values: number[]): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(values)]);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'distillate-idx-'));
});

describe('IDX parsing', () => {
  const images = idx(0x803, [3, 2, 2], [0, 1, 2, 3, 10, 11, 12, 13, 250, 251, 252, 255]);
  const labels = idx(0x801, [3], [2, 0, 1]);

  it('parses plain and gzipped files', () => {
    expect(parseIdx(images, 'i', 3).dims).toEqual([3, 2, 2]);
    expect([...parseIdx(gzipSync(labels), 'l', 1).data]).toEqual([2, 0, 1]);
  });

  it('names the file and the problem: bad magic, truncation, trailing bytes, corrupt gzip', () => {
    expect(() => parseIdx(labels, 'labels.gz', 3)).toThrow(/labels\.gz: bad magic number 0x00000801, expected 0x00000803/);
    expect(() => parseIdx(images.subarray(0, images.length - 1), 'imgs', 3)).toThrow(/imgs: truncated: header declares 3×2×2 = 12 values but only 11 follow/);
    expect(() => parseIdx(Buffer.concat([labels, Buffer.of(1)]), 'l', 1)).toThrow(/l: 1 trailing bytes/);
    expect(() => parseIdx(gzipSync(images).subarray(0, 20), 'cut.gz', 3)).toThrow(/cut\.gz: gzip data is corrupt or truncated/);
    expect(() => parseIdx(Buffer.of(0, 0), 'tiny', 1)).toThrow(IdxFormatError);
  });

  it('checks that a pair agrees and labels fit the classes', async () => {
    await writeFile(join(dir, 'i.gz'), gzipSync(images));
    await writeFile(join(dir, 'l4.gz'), gzipSync(idx(0x801, [4], [0, 1, 2, 3])));
    await writeFile(join(dir, 'lbig.gz'), gzipSync(idx(0x801, [3], [0, 1, 9])));
    await expect(readIdxPair(join(dir, 'i.gz'), join(dir, 'l4.gz'), 10)).rejects.toThrow(/l4\.gz: has 4 labels but .*i\.gz has 3 images/);
    await expect(readIdxPair(join(dir, 'i.gz'), join(dir, 'lbig.gz'), 3)).rejects.toThrow(/lbig\.gz: label 9 at index 2 is outside the 3 classes/);
    await expect(readIdxPair(join(dir, 'missing.gz'), join(dir, 'l4.gz'), 3)).rejects.toThrow(/missing\.gz: file not found/);
  });

  it('imports a pair into a dataset file with shape, scaling and classes', async () => {
    await writeFile(join(dir, 'l.gz'), gzipSync(labels));
    const out = join(dir, 'tiny.arrow');
    const s = await importIdxPair({ images: join(dir, 'i.gz'), labels: join(dir, 'l.gz'), out, classes: ['a', 'b', 'c'] });
    expect(s.rows).toBe(3);
    expect(s.perClass).toEqual([1, 1, 1]);
    const r = await DatasetReader.open(out);
    expect(r.info).toMatchObject({ inputShape: [2, 2, 1], layout: 'HWC', classes: ['a', 'b', 'c'], inputType: 'uint8' });
    expect(r.info.scaling.scale).toBeCloseTo(1 / 255, 15);
    for await (const b of r) {
      expect([...b.ids]).toEqual([0, 1, 2]);
      expect([...b.labels]).toEqual([2, 0, 1]);
      expect([...b.inputs]).toEqual([0, 1, 2, 3, 10, 11, 12, 13, 250, 251, 252, 255]);
    }
  });
});
