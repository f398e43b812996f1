import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetFormatError, DatasetReader, DatasetWriter } from './dataset.js';
import { sha256File } from './internal/arrow-io.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'distillate-dataset-'));
});

describe('dataset file', () => {
  it('round-trips ids, uint8 inputs, nullable labels and metadata through batches', async () => {
    const path = join(dir, 'u8.arrow');
    const info = {
      inputShape: [2, 3, 1],
      layout: 'HWC' as const,
      scaling: { scale: 1 / 255, offset: 0 },
      classes: ['a', 'b', 'c'],
      inputType: 'uint8' as const,
    };
    const w = DatasetWriter.create(path, info);
    await w.append({ ids: Int32Array.of(10, 11), inputs: Uint8Array.from({ length: 12 }, (_, i) => i * 20), labels: Int32Array.of(2, -1) });
    await w.append({ ids: Int32Array.of(12), inputs: Uint8Array.of(1, 2, 3, 4, 5, 255), labels: Int32Array.of(0) });
    const done = await w.close();
    expect(done.rows).toBe(3);
    expect(done.fingerprint).toBe((await sha256File(path)).sha256);

    const r = await DatasetReader.open(path);
    expect(r.info).toEqual(info);
    expect(r.inputSize).toBe(6);
    expect(await r.fingerprint()).toBe(done.fingerprint);
    const batches = [];
    for await (const b of r) batches.push(b);
    expect(batches.map((b) => b.rows)).toEqual([2, 1]);
    expect([...batches[0]!.ids]).toEqual([10, 11]);
    expect([...batches[0]!.labels]).toEqual([2, -1]);
    expect(batches[0]!.inputs).toBeInstanceOf(Uint8Array);
    expect([...batches[0]!.inputs]).toEqual(Array.from({ length: 12 }, (_, i) => i * 20));
    expect([...batches[1]!.inputs]).toEqual([1, 2, 3, 4, 5, 255]);
    expect(await r.countRows()).toBe(3);
  });

  it('round-trips float32 inputs bit for bit', async () => {
    const path = join(dir, 'f32.arrow');
    const inputs = Float32Array.of(0.1, -2.5, 3e-30, 1e30);
    const w = DatasetWriter.create(path, { inputShape: [2], layout: 'flat', scaling: { scale: 1, offset: 0 }, classes: ['x', 'y'], inputType: 'float32' });
    await w.append({ ids: Int32Array.of(0, 1), inputs, labels: Int32Array.of(1, 0) });
    await w.close();
    const r = await DatasetReader.open(path);
    for await (const b of r) expect(b.inputs).toEqual(inputs);
  });

  it('rejects labels outside the class list and inputs of the wrong size', async () => {
    const w = DatasetWriter.create(join(dir, 'bad.arrow'), {
      inputShape: [2],
      layout: 'flat',
      scaling: { scale: 1, offset: 0 },
      classes: ['x', 'y'],
      inputType: 'float32',
    });
    await expect(w.append({ ids: Int32Array.of(0), inputs: Float32Array.of(1, 2), labels: Int32Array.of(2) })).rejects.toThrow(/label 2 is outside/);
    await expect(w.append({ ids: Int32Array.of(0), inputs: Float32Array.of(1), labels: Int32Array.of(0) })).rejects.toThrow(/needs 2/);
    return w.abort();
  });

  it('names the file when it is missing, not Arrow, or not a Distillate dataset', async () => {
    await expect(DatasetReader.open(join(dir, 'nope.arrow'))).rejects.toThrow(/nope\.arrow: dataset file not found/);
    const junk = join(dir, 'junk.arrow');
    await writeFile(junk, 'definitely not arrow');
    await expect(DatasetReader.open(junk)).rejects.toThrow(DatasetFormatError);
    await expect(DatasetReader.open(junk)).rejects.toThrow(/junk\.arrow/);
  });
  it('an imported dataset carries a source per row (any text, non-ASCII included); a plain one has none', async () => {
    const info = { inputShape: [2], layout: 'flat' as const, scaling: { scale: 1, offset: 0 }, classes: ['a'], inputType: 'float32' as const };
    const path = join(dir, 'sources.arrow');
    const w = DatasetWriter.create(path, info, { source: true });
    await expect(w.append({ ids: Int32Array.of(0), inputs: Float32Array.of(1, 2), labels: Int32Array.of(0) })).rejects.toThrow(/give 1 sources/);
    await w.append({ ids: Int32Array.of(0, 1), inputs: Float32Array.of(1, 2, 3, 4), labels: Int32Array.of(0, -1), sources: ['cats/1.png', 'größe/ø.jpg'] });
    await w.append({ ids: Int32Array.of(2), inputs: Float32Array.of(5, 6), labels: Int32Array.of(0), sources: ['row-key-7'] });
    await w.close();
    const r = await DatasetReader.open(path);
    expect(await r.hasSource()).toBe(true);
    const got: string[] = [];
    for await (const s of r.sources()) got.push(...s);
    expect(got).toEqual(['cats/1.png', 'größe/ø.jpg', 'row-key-7']);
    let rows = 0;
    for await (const b of r) rows += b.rows; // the other columns read as before
    expect(rows).toBe(3);

    const plain = join(dir, 'plain.arrow');
    const p = DatasetWriter.create(plain, info);
    await expect(p.append({ ids: Int32Array.of(0), inputs: Float32Array.of(1, 2), labels: Int32Array.of(0), sources: ['x'] })).rejects.toThrow(
      /no source column/,
    );
    await p.append({ ids: Int32Array.of(0), inputs: Float32Array.of(1, 2), labels: Int32Array.of(0) });
    await p.close();
    const pr = await DatasetReader.open(plain);
    expect(await pr.hasSource()).toBe(false);
    await expect(pr.sources().next()).rejects.toThrow(DatasetFormatError);
  });
});
