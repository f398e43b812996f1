/**
 * `distillate-server import` on image folders: real files decoded by @napi-rs/image or sharp.
 * Fashion-MNIST written as a PNG ImageFolder imports bit-identical to the IDX import; the two
 * decoders take the files they are said to and agree on real JPEGs; every kind of bad file is
 * skipped with its reason (or stops the import), conversions happen as stated, and a failed
 * import leaves no dataset behind.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader, FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_FILES, headDataset, importIdxPair } from '@distillate/shared';
import { copyFile } from 'node:fs/promises';
import pl from 'nodejs-polars';
import { pino } from 'pino';
import {
  createServices,
  decodeBySharp,
  decodeFast,
  decoderOf,
  exportLabels,
  importImageFolder,
  reportPath,
  resolveConfig,
  startServer,
  type ImportReport,
  type JobRequestInput,
} from '@distillate/server';
import { LogitCacheReader, writeSyntheticDataset } from '@distillate/shared';
import { convTeacher } from './helpers/teachers.js';
import { REPO, runTs } from './helpers/cli.js';
import { readRows } from './helpers/datasets.js';
import { TeacherRegistry, datasetPreprocessor } from '@distillate/shared/onnx';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const gray = (w: number, h: number, value: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: value, g: value, b: value } } });

const skipFmnist = skipUnless(FASHION_MNIST_PACKAGE);

describe.skipIf(skipFmnist !== undefined)(titled('Fashion-MNIST as a PNG ImageFolder', skipFmnist), () => {
  it('imports bit-identical to the IDX import, labels by folder name, every row traced to its file', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-imgfolder-'));
    const { images, labels } = FASHION_MNIST_FILES.test;
    await importIdxPair({
      images: join(FASHION_MNIST_DEBIAN_DIR, images),
      labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
      out: join(root, 'test.arrow'),
      classes: FASHION_MNIST_CLASSES,
    });
    await headDataset(join(root, 'test.arrow'), join(root, 'idx.arrow'), 600);
    const idx = await readRows(join(root, 'idx.arrow'));
    const folderOf = (c: number) => FASHION_MNIST_CLASSES[c]!.replace(/\//g, '-');
    for (const c of FASHION_MNIST_CLASSES.keys()) await mkdir(join(root, 'png', folderOf(c)), { recursive: true });
    await Promise.all(
      idx.inputs.map((pixels, i) =>
        sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 1 } })
          .png()
          .toFile(join(root, 'png', folderOf(idx.labels[i]!), `${String(i).padStart(5, '0')}.png`)),
      ),
    );

    const r = await importImageFolder({ folder: join(root, 'png'), out: join(root, 'png.arrow'), channels: 1 });
    expect(r).toMatchObject({ imported: 600, skipped: [], size: [28, 28], channels: 1, mode: 'class-folders' });
    const got = await readRows(join(root, 'png.arrow'));
    expect(got.inputs).toHaveLength(600);
    got.sources.forEach((source, row) => {
      const [folder, file] = source.split('/');
      const i = Number(file!.slice(0, 5));
      expect(got.inputs[row], source).toEqual(idx.inputs[i]); // bit-identical pixels
      expect(r.classes[got.labels[row]!]).toBe(folder);
      expect(folder).toBe(folderOf(idx.labels[i]!));
    });
    const info = (await DatasetReader.open(join(root, 'png.arrow'))).info;
    expect(info).toMatchObject({ inputShape: [28, 28, 1], layout: 'HWC', inputType: 'uint8', scaling: { scale: 1 / 255, offset: 0 } });
    expect(JSON.parse(await readFile(reportPath(join(root, 'png.arrow')), 'utf8')).imported).toBe(600);
  });
});

describe.skipIf(skipFmnist !== undefined)(titled('Fashion-MNIST as quality-90 RGB JPEGs at 56×56, imported at 28×28 gray', skipFmnist), () => {
  it("the shipped teacher's accuracy is within 1 pt of its accuracy on the same images from IDX", async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-jpeg-'));
    const rows = 2000;
    const { images, labels } = FASHION_MNIST_FILES.test;
    await importIdxPair({
      images: join(FASHION_MNIST_DEBIAN_DIR, images),
      labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
      out: join(root, 'test.arrow'),
      classes: FASHION_MNIST_CLASSES,
    });
    await headDataset(join(root, 'test.arrow'), join(root, 'idx.arrow'), rows);
    const idx = await readRows(join(root, 'idx.arrow'));
    // Class folders named by the class index (ordered like the IDX labels): 0 … 9. The 2× upscale
    // replicates pixels: a smooth one (cubic, Lanczos) blurs what the import's downscale cannot
    // undo — 1.45 pt (Lanczos) and 2.45 pt (cubic) lost, the same with lossless PNGs, so the
    // round trip and not the JPEG costs them (README, "Your own images").
    for (let c = 0; c < 10; c++) await mkdir(join(root, 'jpeg', String(c)), { recursive: true });
    for (let i = 0; i < rows; i += 200) {
      await Promise.all(
        idx.inputs.slice(i, i + 200).map((pixels, j) =>
          sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 1 } })
            .resize(56, 56, { kernel: 'nearest' })
            .toColourspace('srgb')
            .jpeg({ quality: 90 })
            .toFile(join(root, 'jpeg', String(idx.labels[i + j]!), `${String(i + j).padStart(5, '0')}.jpg`)),
        ),
      );
    }
    const r = await importImageFolder({ folder: join(root, 'jpeg'), out: join(root, 'jpeg.arrow'), size: [28, 28], channels: 1 });
    expect(r).toMatchObject({ imported: rows, skipped: [] });

    // These files take the fast path; sharp's path gives nearly the same pixels (two Lanczos-3
    // implementations): measured on 500 such files, a mean |Δ| of 0.08 gray levels, 99 % within 2.
    const got = await readRows(join(root, 'jpeg.arrow'));
    const diffs: number[] = [];
    for (const [row, source] of got.sources.slice(0, 300).entries()) {
      const bytes = await readFile(join(root, 'jpeg', source));
      expect(decoderOf(bytes), source).toBe('fast');
      const options = { size: [28, 28] as const, channels: 1 as const, fit: 'cover' as const, maxPixels: 1e6 };
      expect((await decodeFast(bytes, options))!.pixels.equals(Buffer.from(got.inputs[row]!)), source).toBe(true);
      const bySharp = (await decodeBySharp(bytes, options)).pixels;
      bySharp.forEach((v, i) => diffs.push(Math.abs(v - got.inputs[row]![i]!)));
    }
    expect(diffs.reduce((a, b) => a + b, 0) / diffs.length).toBeLessThan(0.5);
    expect(diffs.filter((d) => d <= 2).length / diffs.length).toBeGreaterThan(0.98);
    expect(diffs.some((d) => d > 0)).toBe(true); // two decoders, not one called twice

    const registry = await TeacherRegistry.open(join(REPO, 'models'), { provider: 'cpu' });
    try {
      const teacher = registry.get('fmnist-teacher-ls0');
      const info = await teacher.info();
      const accuracy = async (path: string): Promise<number> => {
        const dataset = await DatasetReader.open(path);
        const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
        let right = 0;
        let n = 0;
        for await (const b of dataset) {
          const z = await teacher.logits(pre.apply(b.inputs, b.rows), b.rows);
          const C = info.classes.length;
          for (let row = 0; row < b.rows; row++) {
            let best = 0;
            for (let c = 1; c < C; c++) if (z[row * C + c]! > z[row * C + best]!) best = c;
            const y = path.endsWith('jpeg.arrow') ? Number(dataset.info.classes[b.labels[row]!]) : b.labels[row]!;
            if (best === y) right++;
            n++;
          }
        }
        return right / n;
      };
      const fromIdx = await accuracy(join(root, 'idx.arrow'));
      const fromJpeg = await accuracy(join(root, 'jpeg.arrow'));
      expect(fromIdx).toBeGreaterThan(0.9);
      expect(Math.abs(fromJpeg - fromIdx), `IDX ${fromIdx}, JPEG ${fromJpeg}`).toBeLessThanOrEqual(0.01);
    } finally {
      await registry.releaseAll();
    }
  }, 120_000);
});

describe('importing image folders', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'distillate-import-'));
  });

  async function folder(name: string, files: Record<string, Buffer | Promise<Buffer>>): Promise<string> {
    const dir = join(root, name);
    for (const [path, content] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), await content);
    }
    return dir;
  }

  it('skips every kind of bad file with its reason, imports the rest, and converts CMYK, 16-bit and RGBA as stated', async () => {
    const good = await gray(8, 8, 200).png().toBuffer();
    const jpeg = await gray(8, 8, 120).jpeg({ quality: 95 }).toBuffer();
    const dir = await folder('mixed', {
      'a/good.png': good,
      'a/truncated.png': good.subarray(0, good.length >> 1),
      'a/corrupt.jpg': Buffer.concat([jpeg.subarray(0, 20), Buffer.alloc(200, 0x55)]),
      'a/empty.png': Buffer.alloc(0),
      'a/text.jpg': Buffer.from('this is not an image\n'),
      'a/notes.txt': Buffer.from('ignored: not an image extension'),
      'b/cmyk.jpg': gray(8, 8, 128).toColourspace('cmyk').jpeg({ quality: 100 }).toBuffer(),
      'b/sixteen.png': gray(8, 8, 64).toColourspace('rgb16').png().toBuffer(),
      'b/rgba.png': sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 255, g: 255, b: 255, alpha: 0 } } })
        .png()
        .toBuffer(),
      'b/huge.png': gray(1200, 1000, 10).png().toBuffer(),
    });
    // A name that is not UTF-8, a dangling link and a link loop.
    await writeFile(Buffer.concat([Buffer.from(join(dir, 'b/')), Buffer.from([0x66, 0xff, 0x2e, 0x70, 0x6e, 0x67])]), good);
    await symlink(join(dir, 'b/nowhere.png'), join(dir, 'b/dangling.png'));
    await symlink(join(dir, 'b/loop2.png'), join(dir, 'b/loop1.png'));
    await symlink(join(dir, 'b/loop1.png'), join(dir, 'b/loop2.png'));

    const r = await importImageFolder({ folder: dir, out: join(root, 'mixed.arrow'), size: [8, 8], channels: 1, maxSkipped: 1, maxPixels: 1_000_000 });
    const reasons = Object.fromEntries(r.skipped.map((s) => [s.source, s.reason]));
    expect(Object.keys(reasons).sort()).toEqual([
      'a/corrupt.jpg',
      'a/empty.png',
      'a/text.jpg',
      'a/truncated.png',
      'b/dangling.png',
      'b/huge.png',
      'b/loop1.png',
      'b/loop2.png',
    ]);
    expect(reasons['a/empty.png']).toBe('empty file');
    expect(reasons['a/text.jpg']).toMatch(/not an image/);
    expect(reasons['b/huge.png']).toMatch(/pixel limit/);
    expect(reasons['b/loop1.png']).toBe('a symbolic link loop');
    expect(reasons['b/dangling.png']).toMatch(/no such file/);
    expect(r.ignored).toEqual(['a/notes.txt']);
    expect(r.perClass).toEqual({ a: 1, b: 4 });

    const got = await readRows(join(root, 'mixed.arrow'));
    const bySource = Object.fromEntries(got.sources.map((s, i) => [s, got.inputs[i]!]));
    expect(Object.keys(bySource).sort()).toEqual(['a/good.png', 'b/cmyk.jpg', 'b/f\\xff.png', 'b/rgba.png', 'b/sixteen.png']);
    expect([...new Set(bySource['a/good.png'])]).toEqual([200]);
    expect([...new Set(bySource['b/sixteen.png'])]).toEqual([64]); // 16-bit → 8-bit
    expect([...new Set(bySource['b/rgba.png'])]).toEqual([0]); // transparent → composited onto black
    const cmyk = [...new Set(bySource['b/cmyk.jpg'])];
    expect(cmyk).toHaveLength(1);
    expect(Math.abs(cmyk[0]! - 128)).toBeLessThan(24); // through the CMYK profile: near the gray it was made from
    expect(got.labels).toEqual([0, 1, 1, 1, 1]);
  });

  it("sharp's files decode in processes, one per core: a process that dies fails only its file (skipped, with the reason), and the rest import", async () => {
    const png = await gray(6, 6, 90).png().toBuffer(); // the fast path, in this process
    const webp = await gray(6, 6, 90).webp({ lossless: true }).toBuffer(); // sharp's, in a decoding process
    const dir = await folder('crash', { 'a/1.webp': webp, 'a/2.png': png, 'a/crash.webp': webp, 'b/3.webp': webp, 'b/4.png': png, 'b/5.webp': webp });
    process.env['DISTILLATE_TEST_DECODER_CRASH_ON'] = 'crash.webp';
    try {
      const r = await importImageFolder({ folder: dir, out: join(root, 'crash.arrow'), size: [6, 6], channels: 1, maxSkipped: 0.5, concurrency: 2 });
      expect(r.skipped).toEqual([{ source: 'a/crash.webp', reason: 'the decoding process died on this file (SIGKILL)' }]);
      expect(r.perClass).toEqual({ a: 2, b: 3 });
      const got = await readRows(join(root, 'crash.arrow'));
      expect(got.sources).toEqual(['a/1.webp', 'a/2.png', 'b/3.webp', 'b/4.png', 'b/5.webp']);
      for (const row of got.inputs) expect([...new Set(row)]).toEqual([90]);
    } finally {
      delete process.env['DISTILLATE_TEST_DECODER_CRASH_ON'];
    }
  });

  it('8-bit gray or RGB JPEGs and PNGs take the fast path; every other kind of file is sharp’s', async () => {
    const withExif = await sharp(Buffer.alloc(4 * 2, 255), { raw: { width: 4, height: 2, channels: 1 } })
      .withMetadata({ orientation: 6 })
      .png()
      .toBuffer();
    const files: Record<string, [Buffer, 'fast' | 'sharp']> = {
      'RGB JPEG': [await gray(8, 8, 1).jpeg().toBuffer(), 'fast'],
      'gray JPEG': [await gray(8, 8, 1).toColourspace('b-w').jpeg().toBuffer(), 'fast'],
      'progressive JPEG': [await gray(8, 8, 1).jpeg({ progressive: true }).toBuffer(), 'fast'],
      'RGB PNG': [await gray(8, 8, 1).png().toBuffer(), 'fast'],
      'gray PNG': [await gray(8, 8, 1).toColourspace('b-w').png().toBuffer(), 'fast'],
      'CMYK JPEG': [await gray(8, 8, 1).toColourspace('cmyk').jpeg().toBuffer(), 'sharp'],
      '16-bit PNG': [await gray(8, 8, 1).toColourspace('rgb16').png().toBuffer(), 'sharp'],
      'RGBA PNG': [await gray(8, 8, 1).ensureAlpha().png().toBuffer(), 'sharp'],
      'palette PNG': [await gray(8, 8, 1).png({ palette: true }).toBuffer(), 'sharp'],
      'PNG with EXIF orientation': [withExif, 'sharp'],
      WebP: [await gray(8, 8, 1).webp().toBuffer(), 'sharp'],
      GIF: [await gray(8, 8, 1).gif().toBuffer(), 'sharp'],
      TIFF: [await gray(8, 8, 1).tiff().toBuffer(), 'sharp'],
      'not an image': [Buffer.from('hello'), 'sharp'],
    };
    for (const [what, [bytes, expected]] of Object.entries(files)) expect(decoderOf(bytes), what).toBe(expected);
  });

  it('orients by EXIF and resizes by cover, contain or fill', async () => {
    // 4 wide × 2 high, left half white, right half black, EXIF orientation 6 (rotate 90° clockwise).
    const raw = Buffer.from([255, 255, 0, 0, 255, 255, 0, 0]);
    const dir = await folder('orient', {
      'c/o.png': sharp(raw, { raw: { width: 4, height: 2, channels: 1 } })
        .withMetadata({ orientation: 6 })
        .png()
        .toBuffer(),
    });
    const r = await importImageFolder({ folder: dir, out: join(root, 'orient.arrow'), channels: 1 });
    expect(r.size).toEqual([4, 2]); // H×W after rotation
    expect([...(await readRows(join(root, 'orient.arrow'))).inputs[0]!]).toEqual([255, 255, 255, 255, 0, 0, 0, 0]); // top rows white
    // The same image as a JPEG takes the fast path, which reads the orientation from its EXIF too.
    const jpeg = await sharp(raw, { raw: { width: 4, height: 2, channels: 1 } })
      .withMetadata({ orientation: 6 })
      .jpeg({ quality: 100 })
      .toBuffer();
    expect(decoderOf(jpeg)).toBe('fast');
    const jpegDir = await folder('orient-jpeg', { 'c/o.jpg': jpeg });
    expect((await importImageFolder({ folder: jpegDir, out: join(root, 'orient-jpeg.arrow'), channels: 1 })).size).toEqual([4, 2]);
    const rotated = (await readRows(join(root, 'orient-jpeg.arrow'))).inputs[0]!;
    expect(Math.min(...rotated.slice(0, 4)), `${rotated}`).toBeGreaterThan(200);
    expect(Math.max(...rotated.slice(4)), `${rotated}`).toBeLessThan(55);
    // A gray image asked for in colour (fast path): its value in all three channels.
    const grayDir = await folder('gray-rgb', { 'c/g.png': gray(3, 2, 77).toColourspace('b-w').png().toBuffer() });
    await importImageFolder({ folder: grayDir, out: join(root, 'gray-rgb.arrow'), channels: 3 });
    expect([...(await readRows(join(root, 'gray-rgb.arrow'))).inputs[0]!]).toEqual(new Array(3 * 2 * 3).fill(77));
    const wide = await folder('wide', { 'c/w.png': gray(40, 20, 255).png().toBuffer() });
    const pixels = async (fit: 'cover' | 'contain' | 'fill') => {
      await importImageFolder({ folder: wide, out: join(root, `wide-${fit}.arrow`), size: [10, 10], channels: 1, fit });
      return (await readRows(join(root, `wide-${fit}.arrow`))).inputs[0]!;
    };
    expect([...new Set(await pixels('cover'))]).toEqual([255]);
    expect([...new Set(await pixels('fill'))]).toEqual([255]);
    const contain = await pixels('contain');
    expect(contain[0]).toBe(0); // letterbox bars at the top and bottom
    expect(contain[5 * 10 + 5]).toBe(255);
    // Cover cuts out the centre, on both paths: 40 × 20, black | white (the centre 20 columns) | black.
    const band = Buffer.alloc(40 * 20);
    for (let y = 0; y < 20; y++) band.fill(255, y * 40 + 10, y * 40 + 30);
    const bandImage = () => sharp(band, { raw: { width: 40, height: 20, channels: 1 } }).toColourspace('srgb');
    const bands = await folder('band', { 'c/fast.png': bandImage().png().toBuffer(), 'c/sharp.webp': bandImage().webp({ lossless: true }).toBuffer() });
    await importImageFolder({ folder: bands, out: join(root, 'band.arrow'), size: [10, 10], channels: 1, fit: 'cover' });
    const covered = await readRows(join(root, 'band.arrow'));
    expect(covered.sources).toEqual(['c/fast.png', 'c/sharp.webp']);
    for (const [i, row] of covered.inputs.entries()) expect(Math.min(...row), covered.sources[i]).toBeGreaterThan(230);
  });

  it('an empty class folder is reported (and refused with --on-error fail); a flat folder is a pool that needs its classes', async () => {
    const good = await gray(4, 4, 1).png().toBuffer();
    const dir = await folder('with-empty', { 'x/1.png': good, 'y/.keep-not-image': Buffer.from('') });
    const r = await importImageFolder({ folder: dir, out: join(root, 'with-empty.arrow'), channels: 1 });
    expect(r.emptyClasses).toEqual(['y']);
    expect(r.classes).toEqual(['x', 'y']);
    await expect(importImageFolder({ folder: dir, out: join(root, 'with-empty-fail.arrow'), onError: 'fail' })).rejects.toThrow(
      /class folder y holds no images/,
    );

    const flat = await folder('flat', { '1.png': good, '2.png': good });
    await expect(importImageFolder({ folder: flat, out: join(root, 'flat.arrow') })).rejects.toThrow(
      /no class folders, so it is an unlabelled pool: give its classes/,
    );
    const pool = await importImageFolder({ folder: flat, out: join(root, 'flat.arrow'), classes: ['cat', 'dog'], channels: 3 });
    expect(pool).toMatchObject({ mode: 'flat', imported: 2, classes: ['cat', 'dog'] });
    const got = await readRows(join(root, 'flat.arrow'));
    expect(got.labels).toEqual([-1, -1]);
    expect(got.sources).toEqual(['1.png', '2.png']);
  });

  it('too many skipped files, or one with --on-error fail, stop the import: no dataset, a report that says why', async () => {
    const good = await gray(4, 4, 1).png().toBuffer();
    const dir = await folder('mostly-bad', { 'k/1.png': good, 'k/2.png': Buffer.alloc(0), 'k/3.png': Buffer.from('no') });
    const out = join(root, 'mostly-bad.arrow');
    await expect(importImageFolder({ folder: dir, out })).rejects.toThrow(
      /skipped 2 of 3 image files \(66\.7 %\), over --max-skipped 5\.0 %; first: k\/2\.png: empty file/,
    );
    expect(existsSync(out)).toBe(false);
    const report = JSON.parse(await readFile(reportPath(out), 'utf8')) as { failed: string; skipped: ImportReport['skipped'] };
    expect(report.failed).toMatch(/skipped 2 of 3/);
    expect(report.skipped).toHaveLength(2);
    await expect(importImageFolder({ folder: dir, out, onError: 'fail' })).rejects.toThrow(/^k\/2\.png: empty file$/);
    expect(existsSync(out)).toBe(false);
  });

  it('the CLI prints one summary line, and one error line with exit 1', async () => {
    const good = await gray(4, 4, 9).png().toBuffer();
    const dir = await folder('cli', { 'p/1.png': good, 'q/2.png': good });
    for (let i = 3; i <= 8; i++) await writeFile(join(dir, i % 2 === 0 ? 'p' : 'q', `${i}.png`), good);
    const ok = runTs('server/src/bin.ts', [
      'import',
      dir,
      '--out',
      join(root, 'cli.arrow'),
      '--channels',
      '1',
      '--size',
      '4x4',
      '--split',
      'test=0.25',
      '--seed',
      '3',
      '--labelled',
      '4',
    ]);
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
    expect(ok.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^8 images → .*cli\.arrow \(4×4×1, p 4, q 4\); skipped 0, ignored 0: .*cli\.import-report\.json$/),
      expect.stringMatching(/^test: 2 rows → .*cli-test\.arrow$/),
      expect.stringMatching(/^train: 6 rows → .*cli-train\.arrow$/),
      expect.stringMatching(/^labelled-4: 4 rows → .*cli-labelled-4\.arrow$/),
      expect.stringMatching(/^pool: 2 rows → .*cli-pool\.arrow$/),
    ]);
    const pool = await readRows(join(root, 'cli-pool.arrow'));
    expect(pool.labels).toEqual([-1, -1]);
    expect(pool.sources.every((s) => /^[pq]\/\d\.png$/.test(s))).toBe(true);
    const oddLabelled = runTs('server/src/bin.ts', ['import', dir, '--out', join(root, 'cli2.arrow'), '--channels', '1', '--labelled', '3']);
    expect(oddLabelled.status).toBe(1);
    expect(oddLabelled.stderr.trim()).toBe(
      'distillate-server: --labelled 3: give a positive multiple of the 2 classes (the same number of labelled rows per class)',
    );
    const bad = runTs('server/src/bin.ts', ['import', join(root, 'nowhere'), '--out', join(root, 'x.arrow')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toMatch(/^distillate-server: .*nowhere: cannot read the folder \(no such file/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('pseudo-labels out: an unlabelled folder → import → label job → a table', () => {
  it('CSV, Parquet and JSON lines read back by polars: one row per image, its file, and the classes of the cache', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-labels-'));
    for (const d of ['models', 'data', 'cache', 'images']) await mkdir(join(root, d));
    await writeFile(join(root, 'models', 'conv.onnx'), convTeacher());
    // 40 generated 8×8 gray images (a unit-sized pool: the pipeline, not the data, is under test).
    await writeSyntheticDataset(join(root, 'gen.arrow'), { rows: 40, inputShape: [8, 8, 1], classes: 10 });
    let n = 0;
    for await (const b of await DatasetReader.open(join(root, 'gen.arrow'))) {
      for (let r = 0; r < b.rows; r++, n++) {
        const pixels = Buffer.from((b.inputs as Uint8Array).subarray(r * 64, (r + 1) * 64));
        await sharp(pixels, { raw: { width: 8, height: 8, channels: 1 } })
          .png()
          .toFile(join(root, 'images', `img-${String(n).padStart(3, '0')}.png`));
      }
    }
    const classes = Array.from({ length: 10 }, (_, c) => `class-${c}`);
    await importImageFolder({ folder: join(root, 'images'), out: join(root, 'data', 'pool.arrow'), classes, channels: 1 });

    const services = await createServices(
      resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), logLevel: 'silent' }, {}),
      pino({ level: 'silent' }),
    );
    let labelJob = '';
    const run = async (request: JobRequestInput): Promise<string> => {
      const job = await services.jobs.create(request);
      await services.jobs.idle();
      const done = services.jobs.get(job.id);
      if (done.state !== 'succeeded') throw new Error(`${done.state}: ${done.error?.message}`);
      if (request.type === 'label') labelJob = job.id;
      return join(root, 'cache', done.cacheKey!);
    };
    await services.jobs.init();
    const labelCache = await run({ type: 'label', teacher: 'conv', dataset: 'pool.arrow' });
    const denseCache = await run({ type: 'precompute', teacher: 'conv', dataset: 'pool.arrow', temperature: 2 });
    // A label job's selection keeps each row's source: the selected rows still name their files.
    // The threshold is the median confidence, so that the selection keeps about half of the pool.
    const confidences: number[] = [];
    for await (const b of await LogitCacheReader.open(labelCache)) confidences.push(...b.stats!.confidence);
    const threshold = confidences.sort((a, b) => a - b)[20]!;
    await run({ type: 'label', teacher: 'conv', dataset: 'pool.arrow', label: { threshold, output: 'selected.arrow' } });
    const selection = services.jobs.get(labelJob).selection!;
    expect(selection.path).toBe('selected.arrow');
    await services.teachers.releaseAll();
    const sourceOf = new Map<number, string>();
    const pool = await DatasetReader.open(join(root, 'data', 'pool.arrow'));
    const poolSources = pool.sources();
    for await (const b of pool) {
      const names = (await poolSources.next()).value as string[];
      for (let r = 0; r < b.rows; r++) sourceOf.set(Number(b.ids[r]), names[r]!);
    }
    await poolSources.return(undefined); // read in step with the batches: it still holds its file open
    const selected = await DatasetReader.open(join(root, 'data', 'selected.arrow'));
    expect(await selected.hasSource()).toBe(true);
    const selectedSources = selected.sources();
    let selectedRows = 0;
    for await (const b of selected) {
      const names = (await selectedSources.next()).value as string[];
      for (let r = 0; r < b.rows; r++, selectedRows++) expect(names[r]).toBe(sourceOf.get(Number(b.ids[r])));
    }
    await selectedSources.return(undefined);
    expect(selectedRows).toBe(selection.rows);
    expect(selectedRows).toBeGreaterThan(0);
    expect(selectedRows).toBeLessThan(40); // the threshold dropped some: a selection, not a copy

    // The cache's own pseudo-labels, by id.
    const want = new Map<number, string>();
    for await (const b of await LogitCacheReader.open(labelCache))
      for (let r = 0; r < b.rows; r++) want.set(Number(b.ids[r]), classes[b.stats!.pseudoLabel[r]!]!);
    const files = Array.from({ length: 40 }, (_, i) => `img-${String(i).padStart(3, '0')}.png`);

    // JSON lines through scanJson: readJSON of a path throws in nodejs-polars 0.25.2.
    const read = { csv: (p: string) => pl.readCSV(p), parquet: (p: string) => pl.readParquet(p), jsonl: (p: string) => pl.scanJson(p).collectSync() } as const;
    for (const format of ['csv', 'parquet', 'jsonl'] as const) {
      const out = join(root, `labels.${format}`);
      expect(await exportLabels({ cache: labelCache, dataset: join(root, 'data', 'pool.arrow'), out, format })).toEqual({ rows: 40, path: out });
      const df = read[format](out);
      expect(df.columns).toEqual(['source', 'id', 'class', 'confidence', 'entropy', 'margin']);
      expect(df.height).toBe(40);
      const rows = df.toRecords() as Array<{ source: string; id: number; class: string; confidence: number }>;
      expect(rows.map((r) => r.source)).toEqual(files);
      for (const r of rows) {
        expect(r.class, format).toBe(want.get(Number(r.id)));
        expect(r.confidence).toBeGreaterThan(0.1 - 1e-6); // at least 1/C
        expect(r.confidence).toBeLessThanOrEqual(1);
      }
    }

    // From the dense cache: the same classes (its logits at T = 1), with the top 3 and their probabilities.
    const top = pl.readCSV(
      (await exportLabels({ cache: denseCache, dataset: join(root, 'data', 'pool.arrow'), out: join(root, 'top.csv'), format: 'csv', topK: 3 })).path,
    );
    const topRows = top.toRecords() as Array<Record<string, string | number>>;
    for (const r of topRows) {
      expect(r['class']).toBe(want.get(Number(r['id'])));
      expect(r['top1_class']).toBe(r['class']);
      expect(Math.abs(Number(r['top1_p']) - Number(r['confidence']))).toBeLessThan(1e-5);
      expect(Number(r['top1_p'])).toBeGreaterThanOrEqual(Number(r['top2_p']));
      expect(Number(r['top2_p'])).toBeGreaterThanOrEqual(Number(r['top3_p']));
    }
    const confident = await exportLabels({
      cache: labelCache,
      dataset: join(root, 'data', 'pool.arrow'),
      out: join(root, 'confident.csv'),
      format: 'csv',
      minConfidence: 0.3,
    });
    expect(confident.rows).toBe(pl.readCSV(join(root, 'labels.csv')).filter(pl.col('confidence').gtEq(0.3)).height);

    // Another dataset than the cache's is refused.
    await copyFile(join(root, 'gen.arrow'), join(root, 'other.arrow'));
    await expect(exportLabels({ cache: labelCache, dataset: join(root, 'other.arrow'), out: join(root, 'x.csv'), format: 'csv' })).rejects.toThrow(
      /computed over another dataset/,
    );
    // Over HTTP: a finished job's labels as a download (a server on the same cache finds the job's record).
    const server = await startServer(
      resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), port: 0, logLevel: 'silent' }, {}),
    );
    try {
      const res = await fetch(`${server.url}/v1/jobs/${labelJob}/labels?format=csv&topK=2`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/csv/);
      const lines = (await res.text()).trim().split('\n');
      expect(lines[0]).toBe('source,id,class,confidence,entropy,margin,top1_class,top1_p,top2_class,top2_p');
      expect(lines).toHaveLength(41);
      expect(lines.slice(1).map((l) => l.split(',')[0])).toEqual(files);
      const bad = await fetch(`${server.url}/v1/jobs/${labelJob}/labels?format=xml`);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { code: string } }).error.code).toBeTypeOf('string');
      expect((await fetch(`${server.url}/v1/jobs/no-such-job/labels`)).status).toBe(404);
    } finally {
      await server.close();
    }
    const cli = runTs('server/src/bin.ts', [
      'export-labels',
      '--cache',
      labelCache,
      '--dataset',
      join(root, 'data', 'pool.arrow'),
      '--out',
      join(root, 'cli.parquet'),
    ]);
    expect(cli.stderr).toBe('');
    expect(cli.stdout.trim()).toMatch(/^40 rows → .*cli\.parquet$/);
  });
});
