/**
 * npm run bench:import [-- --json] [-- --quick] [-- --only memory|tables]
 *
 * Image-folder import throughput: quality-90 RGB JPEGs (56×56, ten class folders; Fashion-MNIST
 * test images when Debian's package is installed, else generated ones) imported at 28×28 gray
 * into an Arrow dataset with a source column, by `distillate-server import` (the built CLI under
 * plain node, as `npx distillate-server` runs it; the bench builds it first) and by a Python peer
 * doing the same work as a practitioner would write it (Pillow: EXIF transpose, convert('L'),
 * LANCZOS resize; numpy; pyarrow's IPC file writer; a multiprocessing pool over every core), each
 * in a fresh process, in turns (3 pairs: the machine's drift falls on both). Also the import's
 * peak RSS (the CLI's process; these JPEGs start no decoding process) at 1×, 10× and 20× the
 * images. And table import (a CSV of 784 numeric columns, JSON lines with a list column; 10,000
 * rows) against pyarrow's readers and IPC writer, in turns, and the tables' peak RSS at 1×, 10×
 * and 20×.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import {
  DatasetReader,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_DIR,
  FASHION_MNIST_FILES,
  importIdxPair,
  runCli,
  writeSyntheticDataset,
} from '@distillate/shared';
import { commandPeakRssMb } from './bench/peak-rss.js';
import { log, median, printRows, row, type BenchRow, benchProgram } from './bench/report.js';

const ROOT = resolve(import.meta.dirname, '..');

const PYTHON_PEER = `
import os, sys, time
from multiprocessing import Pool
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

def load(path):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert('L').resize((28, 28), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8).reshape(-1)

def main(folder, out):
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, name))):
            files.append(os.path.join(folder, name, f)); labels.append(c)
    with Pool(os.cpu_count()) as pool:
        pixels = pool.map(load, files, chunksize=64)
    flat = pa.array(np.concatenate(pixels), pa.uint8())
    table = pa.table({
        'id': pa.array(np.arange(len(files), dtype=np.int32)),
        'input': pa.FixedSizeListArray.from_arrays(flat, 784),
        'label': pa.array(labels, pa.int32()),
        'source': pa.array([os.path.relpath(f, folder) for f in files]),
    })
    with pa.OSFile(out, 'wb') as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)

main(sys.argv[1], sys.argv[2])
`;

/** The table peer: pyarrow reads the CSV (every numeric column) or the JSON lines (a list column), and writes the same dataset. */
const PYTHON_TABLE_PEER = `
import sys
import numpy as np
import pyarrow as pa, pyarrow.csv as pcsv, pyarrow.json as pjson

def main(path, out):
    if path.endswith('.csv'):
        t = pcsv.read_csv(path)
        x = np.stack([t.column(f'p{i}').to_numpy().astype(np.float32) for i in range(784)], axis=1)
    else:
        t = pjson.read_json(path)
        x = np.asarray(t.column('pixels').combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(-1, 784)
    n = len(x)
    table = pa.table({
        'id': pa.array(np.arange(n, dtype=np.int32)),
        'input': pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784),
        'label': t.column('label').cast(pa.int32()),
        'source': pa.array([f'{path}#{i}' for i in range(n)]),
    })
    with pa.OSFile(out, 'wb') as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)

main(sys.argv[1], sys.argv[2])
`;

/** Write `count` JPEGs (56×56 RGB, quality 90) into ten class folders. */
async function makeFolder(dir: string, count: number, source: { pixels: Uint8Array[]; labels: number[] }): Promise<void> {
  for (let c = 0; c < 10; c++) await mkdir(join(dir, String(c)), { recursive: true });
  for (let i = 0; i < count; i += 256) {
    await Promise.all(
      Array.from({ length: Math.min(256, count - i) }, (_, j) => {
        const k = (i + j) % source.pixels.length;
        return sharp(Buffer.from(source.pixels[k]!), { raw: { width: 28, height: 28, channels: 1 } })
          .resize(56, 56, { kernel: 'nearest' })
          .toColourspace('srgb')
          .jpeg({ quality: 90 })
          .toFile(join(dir, String(source.labels[k]), `${String(i + j).padStart(6, '0')}.jpg`));
      }),
    );
  }
}

async function images(dir: string): Promise<{ pixels: Uint8Array[]; labels: number[]; what: string }> {
  const path = join(dir, 'source.arrow');
  let what: string;
  if (existsSync(join(FASHION_MNIST_DEBIAN_DIR, FASHION_MNIST_FILES.test.images))) {
    const { images: im, labels } = FASHION_MNIST_FILES.test;
    await importIdxPair({
      images: join(FASHION_MNIST_DEBIAN_DIR, im),
      labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
      out: path,
      classes: FASHION_MNIST_CLASSES,
    });
    what = 'Fashion-MNIST test images';
  } else {
    await writeSyntheticDataset(path, { rows: 10_000, inputShape: [28, 28, 1], classes: 10 });
    what = 'generated 28×28 images (Fashion-MNIST is not installed)';
  }
  const pixels: Uint8Array[] = [];
  const labels: number[] = [];
  for await (const b of await DatasetReader.open(path)) {
    for (let r = 0; r < b.rows; r++) {
      pixels.push((b.inputs as Uint8Array).slice(r * 784, (r + 1) * 784));
      labels.push(b.labels[r]!);
    }
  }
  return { pixels, labels, what };
}

function seconds(cmd: string, args: readonly string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(-4).join(' ')} failed: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`);
  return (performance.now() - t0) / 1000;
}

async function main(opts: { json: boolean; quick: boolean; dir: string; only?: string }): Promise<void> {
  const dir = resolve(opts.dir);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const rows: BenchRow[] = [];
  const n = opts.quick ? 300 : 10_000;
  const source = await images(dir);
  log(opts.json, `import: ${n} JPEGs (56×56 RGB, quality 90) from ${source.what}, at 28×28 gray, ${cpus().length} cores`);
  if (opts.only !== 'tables') await makeFolder(join(dir, 'jpeg'), n, source);
  await writeFile(join(dir, 'peer.py'), PYTHON_PEER);
  const python = spawnSync('python3', ['-c', 'import PIL, numpy, pyarrow'], { encoding: 'utf8' }).status === 0;
  if (!python) log(opts.json, 'python3 lacks Pillow, numpy or pyarrow (pip install pillow pyarrow): no peer');

  // The built CLI, as users run it: built here first (tsc --build does nothing when it is current).
  seconds(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--build']);
  const CLI = join(ROOT, 'server', 'bin', 'distillate-server.js');
  /** `distillate-server import …` in a fresh process: its seconds, start-up included. */
  const distillateImport = (...args: string[]): number => seconds(process.execPath, [CLI, 'import', ...args]);
  const ours = (): number => distillateImport(join(dir, 'jpeg'), '--out', join(dir, 'ours.arrow'), '--size', '28x28', '--channels', '1');
  const peer = (): number => seconds('python3', [join(dir, 'peer.py'), join(dir, 'jpeg'), join(dir, 'peer.arrow')]);
  const pairs = opts.only !== undefined ? 0 : opts.quick ? 1 : 3;
  const rates: number[] = [];
  const peerRates: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const a = n / ours();
    rates.push(a);
    if (python) {
      const b = n / peer();
      peerRates.push(b);
      ratios.push(a / b);
    }
    log(
      opts.json,
      `pair ${i + 1}: distillate ${a.toFixed(0)} images/s${python ? `, Pillow ${peerRates.at(-1)!.toFixed(0)} (×${ratios.at(-1)!.toFixed(2)})` : ''}`,
    );
  }
  const peerRow = python && pairs > 0 ? { name: 'Python: Pillow + numpy + pyarrow, a process per core', value: median(peerRates) } : undefined;
  if (pairs > 0) rows.push(row('import', 'images_per_second_jpeg_56_to_28_gray', median(rates), 'images/s', peerRow));
  if (python && pairs > 0) {
    rows.push(row('import', 'ratio_vs_pillow_median_of_pairs', median(ratios), '×'));
    rows.push(row('import', 'ratio_vs_pillow_lowest_pair', Math.min(...ratios), '×'));
  }

  // Tables: rows/s of a CSV of 784 numeric columns and of JSON lines with a list column, against pyarrow, in turns.
  if (opts.only === undefined || opts.only === 'tables') {
    await writeFile(join(dir, 'table-peer.py'), PYTHON_TABLE_PEER);
    const tableRows = opts.quick ? 300 : 10_000;
    for (const format of ['csv', 'jsonl'] as const) {
      const table = await writeTable(join(dir, `speed-${tableRows}.${format}`), format, tableRows, source);
      const input = format === 'csv' ? Array.from({ length: 784 }, (_, i) => `p${i}`).join(',') : 'pixels';
      const oursTable = (): number => distillateImport(table, '--out', join(dir, 'ours-table.arrow'), '--input', input, '--label', 'label');
      const peerTable = (): number => seconds('python3', [join(dir, 'table-peer.py'), table, join(dir, 'peer-table.arrow')]);
      const ours: number[] = [];
      const peers: number[] = [];
      for (let i = 0; i < (opts.quick ? 1 : 3); i++) {
        ours.push(tableRows / oursTable());
        if (python) peers.push(tableRows / peerTable());
        log(opts.json, `${format} pair ${i + 1}: distillate ${ours.at(-1)!.toFixed(0)} rows/s${python ? `, pyarrow ${peers.at(-1)!.toFixed(0)}` : ''}`);
      }
      const peerRow = python
        ? { name: `Python: pyarrow.${format === 'csv' ? 'csv.read_csv' : 'json.read_json'} + numpy + the IPC writer`, value: median(peers) }
        : undefined;
      rows.push(row('import', `table_rows_per_second_${format}_785_columns`, median(ours), 'rows/s', peerRow));
      if (python) rows.push(row('import', `table_ratio_vs_pyarrow_${format}`, median(ours.map((a, i) => a / peers[i]!)), '×'));
    }
  }

  // Peak RSS of an import in a fresh process (the CLI), at 1×, 10× and 20× the images and rows.
  // Only the CLI's own process is measured: this bench's JPEGs start no decoding process (sharp's files would).
  if (!opts.quick && (opts.only === undefined || opts.only === 'memory')) {
    const folders = [join(dir, 'jpeg-1x'), join(dir, 'jpeg'), join(dir, 'jpeg-20x')];
    await makeFolder(folders[0]!, n / 10, source);
    await makeFolder(folders[2]!, 2 * n, source);
    const rss = (args: string[]): number => commandPeakRssMb([CLI, 'import', ...args, '--out', join(dir, 'rss.arrow')], ROOT);
    const image = folders.map((f) => median([0, 1, 2].map(() => rss([f, '--size', '28x28', '--channels', '1']))));
    rows.push(row('import', 'peak_rss_mb_1x_images', image[0]!, 'MB'));
    rows.push(row('import', 'peak_rss_10x_vs_1x', image[1]! / image[0]!, '×'));
    rows.push(row('import', 'peak_rss_20x_vs_10x', image[2]! / image[1]!, '×'));

    // Tables, streamed row by row: a CSV of 784 numeric columns and a JSONL of a list<float> column.
    for (const format of ['csv', 'jsonl'] as const) {
      const tables = await Promise.all([n / 10, n, 2 * n].map((rowsN) => writeTable(join(dir, `table-${rowsN}.${format}`), format, rowsN, source)));
      const input = format === 'csv' ? Array.from({ length: 784 }, (_, i) => `p${i}`).join(',') : 'pixels';
      const mb = tables.map((t) => median([0, 1, 2].map(() => rss([t, '--input', input, '--label', 'label']))));
      rows.push(row('import', `peak_rss_mb_1x_${format}`, mb[0]!, 'MB'));
      rows.push(row('import', `peak_rss_10x_vs_1x_${format}`, mb[1]! / mb[0]!, '×'));
      rows.push(row('import', `peak_rss_20x_vs_10x_${format}`, mb[2]! / mb[1]!, '×'));
    }
  }
  printRows(rows, opts.json);
}

/** A numeric table of `rows` Fashion-MNIST images: 784 columns p0…p783 (CSV) or one `pixels` list (JSONL), and a label. */
async function writeTable(path: string, format: 'csv' | 'jsonl', rows: number, source: { pixels: Uint8Array[]; labels: number[] }): Promise<string> {
  const out = createWriteStream(path);
  const put = (text: string): Promise<void> => (out.write(text) ? Promise.resolve() : new Promise((ok) => out.once('drain', () => ok())));
  if (format === 'csv') await put(`${Array.from({ length: 784 }, (_, i) => `p${i}`).join(',')},label\n`);
  for (let r = 0; r < rows; r++) {
    const k = r % source.pixels.length;
    const px = Array.from(source.pixels[k]!, (v) => (v / 255).toFixed(4));
    await put(format === 'csv' ? `${px.join(',')},${source.labels[k]}\n` : `${JSON.stringify({ pixels: px.map(Number), label: source.labels[k] })}\n`);
  }
  await new Promise<void>((ok, fail) => out.end((err?: Error | null) => (err ? fail(err) : ok())));
  return path;
}

const program = benchProgram('bench-import', '.bench/import')
  .option('--only <part>', 'memory: only the peak-RSS part; tables: only the table rows/s pairs')
  .action(async (opts: { json: boolean; quick: boolean; dir: string; only?: string }) => main(opts));

await runCli(program);
