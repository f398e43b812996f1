/**
 * npm run bench:cache [-- --json] [-- --quick]
 *
 * Builds a dense float32 cache (100,000 rows × 1,000 classes) and a top-k (k = 10) cache, then
 * measures: write MB/s (next to a raw fs write of the same bytes), streaming read MB/s (next to
 * a raw fs read of the same files, same run, medians of 5 after a warm-up), and the reader's
 * peak RSS for the 1× cache and one 10× its size, each in a fresh child process.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LogitCacheReader, LogitCacheWriter, type StorageInput, runCli } from '@distillate/shared';
import { childPeakRssMb, printPeakRssKb } from './bench/peak-rss.js';
import { log, median, medianOf, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

const CLASSES = 1000;
const BATCH = 4096;

interface Sizes {
  rows: number;
  runs: number;
}

async function writeCache(
  root: string,
  rows: number,
  storage: StorageInput,
  tag: string,
  fsync = true,
): Promise<{ dir: string; bytes: number; seconds: number }> {
  const teacher = { name: `bench-${tag}`, sha256: 'c'.repeat(64), classes: Array.from({ length: CLASSES }, (_, i) => `c${i}`) };
  // One batch of pseudo-random logits, reused with fresh ids: generation stays out of the timing.
  const logits = new Float32Array(BATCH * CLASSES);
  let s = 12345;
  for (let i = 0; i < logits.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    logits[i] = (s / 2 ** 32) * 20 - 10;
  }
  const fingerprint = (tag.charCodeAt(0).toString(16) + '0'.repeat(64)).slice(0, 64);
  await rm(root, { recursive: true, force: true });
  const t0 = performance.now();
  const w = await LogitCacheWriter.open({ root, teacher, dataset: { fingerprint, rows }, preprocessing: '', temperature: 4, storage, fsync });
  const ids = new Int32Array(BATCH);
  for (let start = 0; start < rows; start += BATCH) {
    const n = Math.min(BATCH, rows - start);
    for (let i = 0; i < n; i++) ids[i] = start + i;
    await w.append({ ids: ids.subarray(0, n), logits: logits.subarray(0, n * CLASSES) });
  }
  const m = await w.finish();
  const seconds = (performance.now() - t0) / 1000;
  return { dir: w.dir, bytes: m.shards.reduce((a, sh) => a + sh.bytes, 0), seconds };
}

/** The same number of bytes written with plain FileHandle writes of 1 MiB, optionally fsynced. */
async function rawWrite(path: string, bytes: number, fsync: boolean): Promise<number> {
  const chunk = Buffer.alloc(1 << 20, 7);
  const t0 = performance.now();
  const fh = await open(path, 'w');
  for (let done = 0; done < bytes; done += chunk.length) {
    await fh.write(done + chunk.length > bytes ? chunk.subarray(0, bytes - done) : chunk);
  }
  if (fsync) await fh.sync();
  await fh.close();
  const seconds = (performance.now() - t0) / 1000;
  await rm(path);
  return bytes / seconds / 1e6;
}

async function rawRead(dir: string): Promise<number> {
  const reader = await LogitCacheReader.open(dir, { verify: 'none' });
  let bytes = 0;
  const t0 = performance.now();
  for (const sh of reader.manifest.shards) {
    for await (const chunk of createReadStream(join(dir, sh.file), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) bytes += chunk.length;
  }
  return bytes / ((performance.now() - t0) / 1000) / 1e6;
}

async function cacheRead(dir: string, verify: 'none' | 'lazy', recycleBuffers = false): Promise<number> {
  const reader = await LogitCacheReader.open(dir, { verify, recycleBuffers });
  const bytes = reader.manifest.shards.reduce((a, sh) => a + sh.bytes, 0);
  let rows = 0;
  const t0 = performance.now();
  for await (const b of reader.batches()) rows += b.rows;
  const seconds = (performance.now() - t0) / 1000;
  if (rows !== reader.rows) throw new Error(`read ${rows} rows, expected ${reader.rows}`);
  return bytes / seconds / 1e6;
}

/** Peak RSS (MB) of a fresh process that streams the whole cache with hash verification. */
function childPeakRss(dir: string): number {
  return childPeakRssMb(import.meta.filename, ['--child-read', dir]);
}

async function main(opts: { json: boolean; quick: boolean; dir: string; childRead?: string }): Promise<void> {
  if (opts.childRead !== undefined) {
    const reader = await LogitCacheReader.open(opts.childRead);
    let rows = 0;
    for await (const b of reader.batches()) rows += b.rows;
    if (rows !== reader.rows) throw new Error('short read');
    await printPeakRssKb();
    return;
  }
  const sizes: Sizes = opts.quick ? { rows: 5000, runs: 2 } : { rows: 100_000, runs: 5 };

  await mkdir(opts.dir, { recursive: true });
  const rows: BenchRow[] = [];

  log(opts.json, `writing dense float32 cache: ${sizes.rows} × ${CLASSES} (median of ${sizes.runs} after a warm-up)`);
  let dense = await writeCache(join(opts.dir, 'dense'), sizes.rows, { mode: 'dense', dtype: 'float32' }, 'd');
  for (const fsync of [true, false]) {
    const ours = await medianOf(sizes.runs, async () => {
      dense = await writeCache(join(opts.dir, 'dense'), sizes.rows, { mode: 'dense', dtype: 'float32' }, 'd', fsync);
      return dense.bytes / dense.seconds / 1e6;
    });
    const raw = await medianOf(sizes.runs, () => rawWrite(join(opts.dir, 'raw-write.bin'), dense.bytes, fsync));
    rows.push(
      row('cache', fsync ? 'write_dense_f32_fsync' : 'write_dense_f32_no_fsync', ours, 'MB/s', { name: fsync ? 'fs write + fsync' : 'fs write', value: raw }),
    );
  }
  const half = await writeCache(join(opts.dir, 'half'), sizes.rows, { mode: 'dense', dtype: 'float16' }, 'h');
  rows.push(row('cache', 'write_dense_f16_rows', sizes.rows / half.seconds, 'rows/s', { name: 'dense_f32 write rows/s', value: sizes.rows / dense.seconds }));
  await rm(half.dir, { recursive: true, force: true });

  log(opts.json, `writing top-k (k = 10) cache`);
  const topk = await writeCache(join(opts.dir, 'topk'), sizes.rows, { mode: 'topk', k: 10, dtype: 'float32' }, 't');
  rows.push(row('cache', 'write_topk10_rows', sizes.rows / topk.seconds, 'rows/s', { name: 'dense_f32 write rows/s', value: sizes.rows / dense.seconds }));
  rows.push(row('cache', 'bytes_per_row_topk10', topk.bytes / sizes.rows, 'B/row', { name: 'dense_f32', value: dense.bytes / sizes.rows }));

  log(opts.json, `reading (median of ${sizes.runs} after a warm-up)`);
  const raw = await medianOf(sizes.runs, () => rawRead(dense.dir));
  const read = await medianOf(sizes.runs, () => cacheRead(dense.dir, 'none'));
  const readVerified = await medianOf(sizes.runs, () => cacheRead(dense.dir, 'lazy'));
  const readRecycled = await medianOf(sizes.runs, () => cacheRead(dense.dir, 'none', true));
  rows.push(row('cache', 'read_dense_f32', read, 'MB/s', { name: 'fs.createReadStream', value: raw }));
  rows.push(row('cache', 'read_dense_f32_recycled_buffers', readRecycled, 'MB/s', { name: 'fs.createReadStream', value: raw }));
  rows.push(row('cache', 'read_dense_f32_sha256_verified', readVerified, 'MB/s', { name: 'fs.createReadStream', value: raw }));
  const topkRaw = await medianOf(sizes.runs, () => rawRead(topk.dir));
  const topkRead = await medianOf(sizes.runs, () => cacheRead(topk.dir, 'none'));
  rows.push(row('cache', 'read_topk10', topkRead, 'MB/s', { name: 'fs.createReadStream', value: topkRaw }));

  log(opts.json, `reader peak RSS: 1× and 10× (${sizes.rows * 10} rows), fresh processes, median of ${sizes.runs}`);
  const rss1 = median(Array.from({ length: sizes.runs }, () => childPeakRss(dense.dir)));
  await rm(dense.dir, { recursive: true, force: true });
  await rm(topk.dir, { recursive: true, force: true });
  const big = await writeCache(join(opts.dir, 'dense10x'), sizes.rows * 10, { mode: 'dense', dtype: 'float32' }, 'x');
  const rss10 = median(Array.from({ length: sizes.runs }, () => childPeakRss(big.dir)));
  rows.push(row('cache', 'reader_peak_rss_10x', rss10, 'MB', { name: 'reader_peak_rss_1x', value: rss1 }));
  rows.push(row('cache', 'writer_peak_rss_10x_run', process.resourceUsage().maxRSS / 1024, 'MB', { name: 'cache_size_10x', value: big.bytes / 1e6 }));
  rows.push(row('cache', 'cache_size_10x', big.bytes / 1e6, 'MB', { name: 'cache_size_1x', value: dense.bytes / 1e6 }));
  await rm(opts.dir, { recursive: true, force: true });
  printRows(rows, opts.json);
}

const program = benchProgram('bench-cache', '.bench/cache').option('--child-read <dir>', '(internal) stream one cache and print peak RSS in KB').action(main);

await runCli(program);
