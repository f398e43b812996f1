/**
 * `distillate-server import` on image folders: real files decoded by sharp. Fashion-MNIST
 * written as a PNG ImageFolder imports bit-identical to the IDX import; every kind of bad file is
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
import { importImageFolder, reportPath, type ImportReport } from '@distillate/server';
import { runTs } from './helpers/cli.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const gray = (w: number, h: number, value: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: value, g: value, b: value } } });

async function readAll(path: string): Promise<{ inputs: Uint8Array[]; labels: number[]; sources: string[] }> {
  const reader = await DatasetReader.open(path);
  const D = reader.inputSize;
  const inputs: Uint8Array[] = [];
  const labels: number[] = [];
  for await (const b of reader) {
    for (let r = 0; r < b.rows; r++) {
      inputs.push((b.inputs as Uint8Array).slice(r * D, (r + 1) * D));
      labels.push(b.labels[r]!);
    }
  }
  const sources: string[] = [];
  if (await reader.hasSource()) for await (const s of reader.sources()) sources.push(...s);
  return { inputs, labels, sources };
}

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
    const idx = await readAll(join(root, 'idx.arrow'));
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
    const got = await readAll(join(root, 'png.arrow'));
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

    const got = await readAll(join(root, 'mixed.arrow'));
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
    expect([...(await readAll(join(root, 'orient.arrow'))).inputs[0]!]).toEqual([255, 255, 255, 255, 0, 0, 0, 0]); // top rows white
    const wide = await folder('wide', { 'c/w.png': gray(40, 20, 255).png().toBuffer() });
    const pixels = async (fit: 'cover' | 'contain' | 'fill') => {
      await importImageFolder({ folder: wide, out: join(root, `wide-${fit}.arrow`), size: [10, 10], channels: 1, fit });
      return (await readAll(join(root, `wide-${fit}.arrow`))).inputs[0]!;
    };
    expect([...new Set(await pixels('cover'))]).toEqual([255]);
    expect([...new Set(await pixels('fill'))]).toEqual([255]);
    const contain = await pixels('contain');
    expect(contain[0]).toBe(0); // letterbox bars at the top and bottom
    expect(contain[5 * 10 + 5]).toBe(255);
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
    const got = await readAll(join(root, 'flat.arrow'));
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
    const pool = await readAll(join(root, 'cli-pool.arrow'));
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
