import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { DatasetWriter, type DatasetInfo } from './dataset.js';
import { readIdxPair } from './idx.js';

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;

/** Where Debian's `dataset-fashion-mnist` package puts the files. */
export const FASHION_MNIST_DEBIAN_DIR = '/usr/share/datasets/fashion-mnist';

export const FASHION_MNIST_FILES = {
  train: { images: 'train-images-idx3-ubyte.gz', labels: 'train-labels-idx1-ubyte.gz' },
  test: { images: 't10k-images-idx3-ubyte.gz', labels: 't10k-labels-idx1-ubyte.gz' },
} as const;

export interface ImportedSplit {
  readonly path: string;
  readonly rows: number;
  readonly fingerprint: string;
  readonly perClass: readonly number[];
}

/** Convert one IDX images/labels pair into a dataset file (ids 0..n-1, Uint8 pixels, HWC). */
export async function importIdxPair(opts: { images: string; labels: string; out: string; classes: readonly string[] }): Promise<ImportedSplit> {
  const set = await readIdxPair(opts.images, opts.labels, opts.classes.length);
  const info: DatasetInfo = {
    inputShape: [set.height, set.width, 1],
    layout: 'HWC',
    scaling: { scale: 1 / 255, offset: 0 },
    classes: [...opts.classes],
    inputType: 'uint8',
  };
  const D = set.height * set.width;
  const writer = DatasetWriter.create(opts.out, info);
  const perClass = new Array<number>(opts.classes.length).fill(0);
  for (const l of set.labels) perClass[l]! += 1;
  try {
    const chunk = 8192;
    for (let start = 0; start < set.rows; start += chunk) {
      const end = Math.min(set.rows, start + chunk);
      const ids = new Int32Array(end - start);
      for (let i = 0; i < ids.length; i++) ids[i] = start + i;
      await writer.append({ ids, inputs: set.images.subarray(start * D, end * D), labels: set.labels.subarray(start, end) });
    }
    const done = await writer.close();
    return { path: done.path, rows: done.rows, fingerprint: done.fingerprint, perClass };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Import Fashion-MNIST's four files from `from` into `<out>/train.arrow` and `<out>/test.arrow`. */
export async function importFashionMnist(from: string, out: string): Promise<{ train: ImportedSplit; test: ImportedSplit }> {
  await mkdir(out, { recursive: true });
  const split = (name: 'train' | 'test') =>
    importIdxPair({
      images: join(from, FASHION_MNIST_FILES[name].images),
      labels: join(from, FASHION_MNIST_FILES[name].labels),
      out: join(out, `${name}.arrow`),
      classes: FASHION_MNIST_CLASSES,
    });
  const train = await split('train');
  const test = await split('test');
  return { train, test };
}
