/** The importer as a user runs it: real files, real process, exit codes and messages. */
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { runTs } from './helpers/cli.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';
import { describe, expect, it } from 'vitest';
import { DatasetReader, FASHION_MNIST_DEBIAN_DIR } from '@distillate/shared';

function runImport(args: string[]) {
  return runTs('scripts/import-fashion-mnist.ts', args);
}

describe('import-fashion-mnist CLI', () => {
  it('exits non-zero with one line naming the directory without the files', async () => {
    const r = runImport(['--from', '/nonexistent-dir', '--out', await mkdtemp(join(tmpdir(), 'imp-'))]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/^import-fashion-mnist: \/nonexistent-dir does not hold the four Fashion-MNIST files \(train-images-idx3-ubyte\.gz, /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('exits non-zero naming a file with a bad magic number', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imp-'));
    await writeFile(join(dir, 'imgs.gz'), gzipSync(Buffer.from([0, 0, 8, 1, 0, 0, 0, 1, 5])));
    await writeFile(join(dir, 'labels.gz'), gzipSync(Buffer.from([0, 0, 8, 1, 0, 0, 0, 1, 5])));
    const r = runImport(['--images', join(dir, 'imgs.gz'), '--labels', join(dir, 'labels.gz'), '--out', join(dir, 'x')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/imgs\.gz: bad magic number 0x00000801, expected 0x00000803/);
    expect(existsSync(join(dir, 'x.arrow'))).toBe(false);
  });

  // npm run setup (and so CI) installs dataset-fashion-mnist; elsewhere the test says why it is skipped.
  const skip = skipUnless(FASHION_MNIST_PACKAGE);
  it.skipIf(skip !== undefined)(titled('imports the real Fashion-MNIST: 60,000 + 10,000 rows, balanced classes', skip), async () => {
    const out = await mkdtemp(join(tmpdir(), 'fmnist-'));
    const r = runImport(['--from', FASHION_MNIST_DEBIAN_DIR, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    for (const [split, rows, perClass] of [
      ['train', 60000, 6000],
      ['test', 10000, 1000],
    ] as const) {
      const reader = await DatasetReader.open(join(out, `${split}.arrow`));
      expect(reader.info.inputShape).toEqual([28, 28, 1]);
      expect(reader.info.classes).toHaveLength(10);
      const counts = new Array(10).fill(0);
      let n = 0;
      for await (const b of reader) {
        for (const l of b.labels) counts[l]++;
        n += b.rows;
      }
      expect(n).toBe(rows);
      expect(counts).toEqual(new Array(10).fill(perClass));
    }
  });
});
