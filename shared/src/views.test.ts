/**
 * Views: drawn by seed (the same on every side), transformed by moving stored values only, and
 * replayed by the aligner exactly as they were cached.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetReader } from './dataset.js';
import { alignDatasetWithViewCaches } from './logit-cache/align.js';
import { cacheKey } from './logit-cache/manifest.js';
import { LogitCacheReader, verifyCache } from './logit-cache/reader.js';
import { LogitCacheWriter } from './logit-cache/writer.js';
import { writeSyntheticDataset } from './synthetic.js';
import { ViewSpecSchema, applyView, drawView, imageGeometry, pickView, type ImageGeometry } from './views.js';

const spec = ViewSpecSchema.parse({ count: 4, seed: 11, augment: { shift: 2, flip: true } });

/** A toy "teacher": 3 logits from weighted pixel sums of the (already transformed) image. */
function toyLogits(images: Uint8Array, n: number, D: number): Float32Array {
  const out = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < D; d++) {
      const v = images[i * D + d]! / 255;
      out[i * 3]! += v * ((d % 7) - 3);
      out[i * 3 + 1]! += v * ((d % 5) - 2);
      out[i * 3 + 2]! += v * (d < D / 2 ? 1 : -1);
    }
  }
  return out;
}

describe('views', () => {
  it('are drawn by (seed, id, view) alone, within the spec', () => {
    const a = Array.from({ length: 50 }, (_, id) => drawView(spec, id, id % 4));
    const b = Array.from({ length: 50 }, (_, id) => drawView(spec, id, id % 4));
    expect(a).toEqual(b);
    expect(a.every((p) => Math.abs(p.dx) <= 2 && Math.abs(p.dy) <= 2)).toBe(true);
    expect(new Set(a.map((p) => `${p.dx},${p.dy},${p.flip}`)).size).toBeGreaterThan(10);
    expect(a.some((p) => p.flip) && a.some((p) => !p.flip)).toBe(true);
    const other = Array.from({ length: 50 }, (_, id) => drawView({ ...spec, seed: 12 }, id, id % 4));
    expect(other).not.toEqual(a);
    const noFlip = ViewSpecSchema.parse({ count: 2, seed: 1, augment: { shift: 1 } });
    expect(Array.from({ length: 50 }, (_, id) => drawView(noFlip, id, 0)).every((p) => !p.flip)).toBe(true);
    expect(pickView(3, 0, 17, 16)).toBe(pickView(3, 0, 17, 16));
    expect(new Set(Array.from({ length: 64 }, (_, id) => pickView(3, 0, id, 16))).size).toBeGreaterThan(8);
  });

  it('refuse bad specs and change the cache key', () => {
    expect(ViewSpecSchema.safeParse({ count: -1, seed: 0, augment: {} }).success).toBe(false);
    expect(ViewSpecSchema.safeParse({ count: 4, seed: 0, augment: { rotate: 10 } }).success).toBe(false);
    expect(() => imageGeometry({ inputShape: [64], layout: 'flat' })).toThrow(/image samples/);
    const base = { teacherSha256: 'a'.repeat(64), datasetFingerprint: 'b'.repeat(64), preprocessing: 'p', temperature: 1, storage: { mode: 'dense' as const } };
    const keys = new Set([
      cacheKey(base),
      cacheKey({ ...base, views: spec }),
      cacheKey({ ...base, views: { ...spec, seed: 12 } }),
      cacheKey({ ...base, views: { ...spec, count: 8 } }),
      cacheKey({ ...base, views: { ...spec, augment: { shift: 2, flip: false } } }),
    ]);
    expect(keys.size).toBe(5);
  });

  it('move pixels: a flip then a shift with zero fill, the same in HWC and CHW', () => {
    // 2 × 3 image, 2 channels: value = 10·y + x (+100 for channel 1).
    const hwc = new Uint8Array(12);
    const chw = new Uint8Array(12);
    for (let y = 0; y < 2; y++)
      for (let x = 0; x < 3; x++)
        for (let c = 0; c < 2; c++) {
          hwc[(y * 3 + x) * 2 + c] = 10 * y + x + 100 * c;
          chw[(c * 2 + y) * 3 + x] = 10 * y + x + 100 * c;
        }
    const g1: ImageGeometry = { height: 2, width: 3, channels: 2, layout: 'HWC' };
    const g2: ImageGeometry = { height: 2, width: 3, channels: 2, layout: 'CHW' };
    const p = { dx: 1, dy: 0, flip: true };
    const a = applyView(hwc, new Uint8Array(12), g1, p);
    const b = applyView(chw, new Uint8Array(12), g2, p);
    // Row y = 0 mirrored is [2, 1, 0]; shifted right by 1 it is [0(fill), 2, 1].
    expect([a[0], a[2], a[4]]).toEqual([0, 2, 1]);
    expect([b[0], b[1], b[2]]).toEqual([0, 2, 1]);
    expect([b[6], b[7], b[8]]).toEqual([0, 102, 101]);
    expect(Array.from(applyView(hwc, new Uint8Array(12), g1, { dx: 0, dy: 0, flip: false }))).toEqual(Array.from(hwc));
  });

  it('are cached image-major and replayed exactly: the teacher on the replayed view gives the cached logits', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-views-'));
    const path = join(root, 'd.arrow');
    const rows = 300;
    const { fingerprint } = await writeSyntheticDataset(path, { rows, inputShape: [8, 8, 1], classes: 3, batchRows: 70 });
    const dataset = await DatasetReader.open(path);
    const g = imageGeometry(dataset.info);
    const D = 64;
    const writer = await LogitCacheWriter.open({
      root,
      teacher: { name: 'toy', sha256: 'c'.repeat(64), classes: ['a', 'b', 'c'] },
      dataset: { fingerprint, rows },
      preprocessing: 'p',
      temperature: 2,
      storage: { mode: 'dense' },
      views: spec,
      shardRows: 90,
    });
    for await (const b of dataset) {
      const K = spec.count;
      const ids = new Int32Array(b.rows * K);
      const views = new Uint8Array(b.rows * K * D);
      for (let i = 0; i < b.rows; i++) {
        for (let v = 0; v < K; v++) {
          ids[i * K + v] = b.ids[i] as number;
          applyView(
            b.inputs.subarray(i * D, (i + 1) * D) as Uint8Array,
            views.subarray((i * K + v) * D, (i * K + v + 1) * D),
            g,
            drawView(spec, b.ids[i] as number, v),
          );
        }
      }
      await writer.append({ ids, logits: toyLogits(views, b.rows * K, D) });
    }
    const manifest = await writer.finish();
    expect(manifest.views).toEqual(spec);
    expect(manifest.shards.every((s) => s.rows % spec.count === 0)).toBe(true);
    expect((await verifyCache(writer.dir)).ok).toBe(true);

    const cache = await LogitCacheReader.open(writer.dir);
    for (const viewSeed of [1, 2]) {
      const seen: number[] = [];
      const picked = new Set<string>();
      for await (const b of alignDatasetWithViewCaches(dataset, [cache], { viewSeed, from: 40, to: 250 })) {
        const replayed = toyLogits(b.inputs as Uint8Array, b.rows, D);
        const t = b.teachers[0]!;
        if (t.kind !== 'dense') throw new Error('dense expected');
        for (let i = 0; i < b.rows * 3; i++) expect(t.logits[i]! * 2).toBeCloseTo(replayed[i]!, 5);
        for (let i = 0; i < b.rows; i++) {
          seen.push(Number(b.ids[i]));
          picked.add(String(pickView(viewSeed, 0, Number(b.ids[i]), spec.count)));
        }
      }
      expect(seen.length).toBe(210);
      expect(picked.size).toBe(spec.count);
    }
  });
});
