/**
 * Where Fashion-MNIST comes from, as torchvision, tfds and Keras do it: a directory you give,
 * else the user cache, else Debian's `dataset-fashion-mnist`, else a download from the
 * dataset's public location into the cache. Every file is checked against sha256 constants
 * over its *decompressed* IDX bytes: Debian recompresses the `.gz` files (their md5s differ
 * from the published ones) while the images and labels inside are the same, so a hash of the
 * `.gz` would reject one source or the other. A download goes to a temporary file and is renamed
 * into the cache only once it verifies, so a failed or corrupt one leaves nothing behind.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createGunzip } from 'node:zlib';
import { FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_FILES } from './fashion-mnist.js';

/** The location the dataset's authors publish (and torchvision's mirror). */
export const FASHION_MNIST_URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/';

/** sha256 of each file's decompressed IDX bytes. */
export const FASHION_MNIST_SHA256: Readonly<Record<string, string>> = {
  'train-images-idx3-ubyte.gz': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
  'train-labels-idx1-ubyte.gz': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
  't10k-images-idx3-ubyte.gz': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
  't10k-labels-idx1-ubyte.gz': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
};

const FILES = Object.values(FASHION_MNIST_FILES).flatMap((f) => [f.images, f.labels]);

export class DatasetUnavailableError extends Error {
  override readonly name = 'DatasetUnavailableError';
}

export class DatasetIntegrityError extends Error {
  override readonly name = 'DatasetIntegrityError';
}

export interface AcquireOptions {
  /** A directory holding the four `.gz` files (`--data DIR`): used as given, or an error. */
  readonly data?: string;
  /** Environment: XDG_CACHE_HOME, HOME, DISTILLATE_FASHION_MNIST_URL, DISTILLATE_NO_SYSTEM_DATA. */
  readonly env?: NodeJS.ProcessEnv;
  /** Bytes received of each download (total from Content-Length, when sent). */
  readonly onProgress?: (file: string, received: number, total: number | undefined) => void;
}

export interface AcquiredDataset {
  readonly dir: string;
  readonly source: 'data' | 'cache' | 'debian' | 'download';
}

/** The user cache: $XDG_CACHE_HOME/distillate/datasets/fashion-mnist (default ~/.cache/…). */
export function fashionMnistCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env['XDG_CACHE_HOME'] !== undefined && env['XDG_CACHE_HOME'] !== '' ? env['XDG_CACHE_HOME'] : join(env['HOME'] ?? homedir(), '.cache');
  return join(base, 'distillate', 'datasets', 'fashion-mnist');
}

/** sha256 of a gzipped file's decompressed bytes. */
async function decompressedSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done();
    },
  });
  await pipeline(createReadStream(path), createGunzip(), sink);
  return hash.digest('hex');
}

/** Check every file in `dir`; throws DatasetIntegrityError naming the first that does not match. */
export async function verifyFashionMnist(dir: string): Promise<void> {
  for (const f of FILES) {
    let got: string;
    try {
      got = await decompressedSha256(join(dir, f));
    } catch (err) {
      throw new DatasetIntegrityError(`${join(dir, f)}: not a readable gzip file (${(err as Error).message.split('\n')[0]})`);
    }
    if (got !== FASHION_MNIST_SHA256[f])
      throw new DatasetIntegrityError(
        `${join(dir, f)}: sha256 of the decompressed IDX bytes is ${got.slice(0, 12)}…, expected ${FASHION_MNIST_SHA256[f]!.slice(0, 12)}… (corrupt or not Fashion-MNIST)`,
      );
  }
}

const complete = (dir: string): boolean => FILES.every((f) => existsSync(join(dir, f)));

/** One file into `dir`: to a temporary name, verified, then renamed. */
async function download(base: string, file: string, dir: string, onProgress?: AcquireOptions['onProgress']): Promise<void> {
  const url = new URL(file, base.endsWith('/') ? base : `${base}/`);
  const tmp = join(dir, `.${file}.part-${process.pid}`);
  try {
    const res = await fetch(url);
    if (!res.ok || res.body === null) throw new DatasetUnavailableError(`${url}: HTTP ${res.status}`);
    const length = Number(res.headers.get('content-length'));
    const total = Number.isFinite(length) && length > 0 ? length : undefined;
    let received = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        onProgress?.(file, received, total);
        done(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(res.body as WebReadableStream), count, createWriteStream(tmp));
    if (total !== undefined && received !== total) throw new DatasetUnavailableError(`${url}: the connection closed after ${received} of ${total} bytes`);
    const got = await decompressedSha256(tmp).catch((err: Error) => {
      throw new DatasetIntegrityError(`${url}: not a gzip file (${err.message.split('\n')[0]})`);
    });
    if (got !== FASHION_MNIST_SHA256[file])
      throw new DatasetIntegrityError(
        `${url}: sha256 of the decompressed IDX bytes is ${got.slice(0, 12)}…, expected ${FASHION_MNIST_SHA256[file]!.slice(0, 12)}… (corrupt download)`,
      );
    await rename(tmp, join(dir, file));
  } catch (err) {
    await rm(tmp, { force: true });
    if (err instanceof DatasetUnavailableError || err instanceof DatasetIntegrityError) throw err;
    throw new DatasetUnavailableError(
      `${url}: ${(err as Error).message.split('\n')[0]}${(err as { cause?: Error }).cause === undefined ? '' : ` (${(err as { cause: Error }).cause.message})`}`,
    );
  }
}

/**
 * The directory holding Fashion-MNIST's four files, verified. Looks in `data` (only, when
 * given), then the user cache, then Debian's directory (unless DISTILLATE_NO_SYSTEM_DATA=1),
 * and otherwise downloads into the cache from DISTILLATE_FASHION_MNIST_URL or the public location.
 */
export async function acquireFashionMnist(opts: AcquireOptions = {}): Promise<AcquiredDataset> {
  const env = opts.env ?? process.env;
  if (opts.data !== undefined) {
    if (!complete(opts.data)) throw new DatasetUnavailableError(`${opts.data} does not hold the four Fashion-MNIST files (${FILES.join(', ')})`);
    await verifyFashionMnist(opts.data);
    return { dir: opts.data, source: 'data' };
  }
  const cache = fashionMnistCacheDir(env);
  if (complete(cache)) {
    await verifyFashionMnist(cache);
    return { dir: cache, source: 'cache' };
  }
  if (env['DISTILLATE_NO_SYSTEM_DATA'] !== '1' && complete(FASHION_MNIST_DEBIAN_DIR)) {
    await verifyFashionMnist(FASHION_MNIST_DEBIAN_DIR);
    return { dir: FASHION_MNIST_DEBIAN_DIR, source: 'debian' };
  }
  const base =
    env['DISTILLATE_FASHION_MNIST_URL'] !== undefined && env['DISTILLATE_FASHION_MNIST_URL'] !== '' ? env['DISTILLATE_FASHION_MNIST_URL'] : FASHION_MNIST_URL;
  await mkdir(cache, { recursive: true });
  try {
    for (const f of FILES) if (!existsSync(join(cache, f))) await download(base, f, cache, opts.onProgress);
  } catch (err) {
    throw new DatasetUnavailableError(
      `no Fashion-MNIST: not in the cache (${cache})${env['DISTILLATE_NO_SYSTEM_DATA'] === '1' ? '' : ` or ${FASHION_MNIST_DEBIAN_DIR}`}, and the download failed: ${(err as Error).message}. Get it with \`apt-get install -y dataset-fashion-mnist\`, give --data DIR (the four .gz files), or allow network access`,
    );
  }
  return { dir: cache, source: 'download' };
}
