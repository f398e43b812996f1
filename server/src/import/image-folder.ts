/**
 * Import a folder of images into a dataset file, as torchvision's ImageFolder reads one: class
 * sub-folders give the labels (class names from the folder names, in byte order), a flat folder
 * gives an unlabelled pool. Images are decoded by @napi-rs/image or sharp (image-decode.ts says
 * which file goes where), oriented by their EXIF tag,
 * converted to 8-bit gray or sRGB (alpha composited onto black, CMYK and 16-bit converted),
 * resized to one size by cover (centre crop), contain (letterbox, black bars) or fill (stretch),
 * and stored as uint8 HWC rows scaled by 1/255, with a `source` column holding each row's path
 * relative to the folder.
 *
 * Memory stays bounded: files are listed (names only), then decoded a chunk at a time on every
 * core (on libuv's threads, or in decoding processes for sharp's files: DecodePool) and written
 * in order. A file that cannot be imported (corrupt, truncated, empty, not an
 * image, over the pixel limit, unreadable) is skipped with its reason in the import report, or
 * stops the import (`onError: 'fail'`); more skipped than `maxSkipped` fails the import. The
 * output is written atomically: a failed import leaves no file.
 */
import { availableParallelism } from 'node:os';
import { readdir } from 'node:fs/promises';
import type { DatasetInfo } from '@distillate/shared';
import { DecodePool } from './decode-pool.js';
import { decode, decodeBySharp, decodeFast, readImageFile, reasonOf, type Decoded, type Fit } from './image-decode.js';
import { ImportError, ImportSink, type SkippedFile } from './sink.js';

export { ImportError, reportPath, type SkippedFile } from './sink.js';
export { decode, reasonOf, type Decoded, type Fit } from './image-decode.js';

export interface ImageFolderImport {
  /** The folder: class sub-folders, or images directly inside it (an unlabelled pool). */
  readonly folder: string;
  /** The dataset file to write (`.arrow`); the report goes next to it. */
  readonly out: string;
  /** [height, width]; default: the first image's (oriented) size. */
  readonly size?: readonly [number, number];
  readonly channels?: 1 | 3;
  readonly fit?: Fit;
  /** Class names, for a flat folder (required there); for class folders, their order (every folder must be named). */
  readonly classes?: readonly string[];
  readonly onError?: 'skip' | 'fail';
  /** The largest fraction of image files that may be skipped before the import fails (default 0.05). */
  readonly maxSkipped?: number;
  /** Decompression-bomb guard: images with more pixels are refused (default 40 M). */
  readonly maxPixels?: number;
  /** Images decoded at once (default: the number of cores). */
  readonly concurrency?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface ImportReport {
  readonly folder: string;
  readonly out: string;
  readonly mode: 'class-folders' | 'flat';
  readonly classes: readonly string[];
  readonly size: readonly [number, number];
  readonly channels: 1 | 3;
  readonly fit: Fit;
  readonly imported: number;
  readonly perClass: Readonly<Record<string, number>>;
  readonly skipped: readonly SkippedFile[];
  /** Files without an image extension, and files beside the class folders: not images of the dataset. */
  readonly ignored: readonly string[];
  readonly emptyClasses: readonly string[];
  readonly fingerprint: string;
}

/** Extensions sharp decodes from its npm build (no BMP; image-decode.ts): what counts as an image file. */
const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);
const CHUNK = 256;

/** A path as bytes (names need not be UTF-8) and as the text written to `source`. */
interface Entry {
  readonly path: Buffer;
  readonly source: string;
  readonly label: number;
}

/** Bytes of a file name → text: UTF-8 where it is valid, each other byte as \xNN (so the source stays traceable). */
export function nameText(bytes: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    let out = '';
    let i = 0;
    while (i < bytes.length) {
      let j = i + 1;
      while (j <= Math.min(bytes.length, i + 4)) {
        try {
          out += new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(i, j));
          break;
        } catch {
          j++;
        }
      }
      if (j > Math.min(bytes.length, i + 4)) {
        out += `\\x${bytes[i]!.toString(16).padStart(2, '0')}`;
        j = i + 1;
      }
      i = j;
    }
    return out;
  }
}

const extOf = (name: Buffer): string => {
  const s = name.toString('latin1');
  const dot = s.lastIndexOf('.');
  return dot < 0 ? '' : s.slice(dot).toLowerCase();
};

const joinBytes = (dir: Buffer, name: Buffer): Buffer => Buffer.concat([dir, Buffer.from('/'), name]);

/** Every image file under `dir` (recursively, symlinks not followed into directories), sorted by bytes. */
async function listImages(dir: Buffer, rel: string, ignored: string[]): Promise<Array<{ path: Buffer; source: string }>> {
  const out: Array<{ path: Buffer; source: string }> = [];
  const entries = await readdir(dir, { encoding: 'buffer', withFileTypes: true });
  entries.sort((a, b) => Buffer.compare(a.name, b.name));
  for (const e of entries) {
    const path = joinBytes(dir, e.name);
    const source = rel === '' ? nameText(e.name) : `${rel}/${nameText(e.name)}`;
    if (e.isDirectory()) out.push(...(await listImages(path, source, ignored)));
    else if (IMAGE_EXTENSIONS.has(extOf(e.name))) out.push({ path, source });
    else ignored.push(source);
  }
  return out;
}

export async function importImageFolder(o: ImageFolderImport): Promise<ImportReport> {
  return new ImageFolderImporter(o).run();
}

class ImageFolderImporter {
  readonly #o: ImageFolderImport;
  constructor(o: ImageFolderImport) {
    this.#o = o;
  }

  async #scan(): Promise<{ mode: ImportReport['mode']; classes: string[]; entries: Entry[]; ignored: string[]; emptyClasses: string[] }> {
    const root = Buffer.from(this.#o.folder);
    let top;
    try {
      top = await readdir(root, { encoding: 'buffer', withFileTypes: true });
    } catch (err) {
      throw new ImportError(`${this.#o.folder}: cannot read the folder (${reasonOf(err)})`);
    }
    top.sort((a, b) => Buffer.compare(a.name, b.name));
    const dirs = top.filter((e) => e.isDirectory());
    const ignored: string[] = [];
    if (dirs.length === 0) {
      // A flat folder: an unlabelled pool.
      if (this.#o.classes === undefined || this.#o.classes.length === 0)
        throw new ImportError(
          `${this.#o.folder} has no class folders, so it is an unlabelled pool: give its classes (--classes a,b,c: the classes a teacher will label it with)`,
        );
      const files = await listImages(root, '', ignored);
      return { mode: 'flat', classes: [...this.#o.classes], entries: files.map((f) => ({ ...f, label: -1 })), ignored, emptyClasses: [] };
    }
    for (const e of top) if (!e.isDirectory()) ignored.push(nameText(e.name));
    const names = dirs.map((d) => nameText(d.name));
    let classes = names;
    if (this.#o.classes !== undefined) {
      const missing = this.#o.classes.filter((c) => !names.includes(c));
      const extra = names.filter((n) => !this.#o.classes!.includes(n));
      if (missing.length > 0 || extra.length > 0)
        throw new ImportError(
          `--classes and the class folders differ: ${[missing.length > 0 ? `no folder for ${missing.join(', ')}` : '', extra.length > 0 ? `no class for folder ${extra.join(', ')}` : ''].filter(Boolean).join('; ')}`,
        );
      classes = [...this.#o.classes];
    }
    const entries: Entry[] = [];
    const emptyClasses: string[] = [];
    for (const d of dirs) {
      const name = nameText(d.name);
      const files = await listImages(joinBytes(root, d.name), name, ignored);
      if (files.length === 0) emptyClasses.push(name);
      entries.push(...files.map((f) => ({ ...f, label: classes.indexOf(name) })));
    }
    return { mode: 'class-folders', classes, entries, ignored, emptyClasses };
  }

  async run(): Promise<ImportReport> {
    const o = this.#o;
    const fit = o.fit ?? 'cover';
    const channels = o.channels ?? 3;
    const onError = o.onError ?? 'skip';
    const maxSkipped = o.maxSkipped ?? 0.05;
    const maxPixels = o.maxPixels ?? 40_000_000;
    const concurrency = Math.max(1, o.concurrency ?? availableParallelism());
    if (o.size !== undefined && !o.size.every((d) => Number.isInteger(d) && d > 0))
      throw new ImportError(`--size must be HxW in whole pixels, got ${o.size.join('x')}`);
    const scan = await this.#scan();
    if (scan.emptyClasses.length > 0 && onError === 'fail')
      throw new ImportError(
        `class folder${scan.emptyClasses.length > 1 ? 's' : ''} ${scan.emptyClasses.join(', ')} hold${scan.emptyClasses.length > 1 ? '' : 's'} no images`,
      );
    const total = scan.entries.length;
    if (total === 0) throw new ImportError(`${o.folder}: no image files (${[...IMAGE_EXTENSIONS].join(' ')})`);
    const sink = new ImportSink({ out: o.out, onError, maxSkipped, unit: 'image files' });
    let size = o.size;
    let done = 0;
    // sharp's files (image-decode.ts says which), more than one at a time: decoding processes,
    // started when the first such file comes (sharp in one process does not scale across cores;
    // a process that dies on a hostile file fails only that file). The fast path decodes in this
    // process, on libuv's threads.
    let pool: DecodePool | undefined;
    // A file that cannot be imported gives its reason; skips are recorded in file order, whichever
    // finishes first.
    const decodeOne = async (e: Entry): Promise<Decoded | { readonly skip: string }> => {
      try {
        const options = { size, channels, fit, maxPixels };
        const bytes = readImageFile(e.path);
        const fast = await decodeFast(bytes, options);
        if (fast !== undefined) return fast;
        if (concurrency === 1) return await decodeBySharp(bytes, options);
        pool ??= new DecodePool(concurrency);
        return await pool.decode(e.path, options);
      } catch (err) {
        return { skip: reasonOf(err) };
      } finally {
        o.onProgress?.(++done, total);
      }
    };
    const failed = { folder: o.folder, out: o.out, ignored: scan.ignored, emptyClasses: scan.emptyClasses };
    try {
      for (let start = 0; start < total; start += CHUNK) {
        const chunk = scan.entries.slice(start, start + CHUNK);
        if (size === undefined) {
          // The first image that decodes sets the size of every other (the others are reported in order below).
          for (const e of scan.entries) {
            let first: Decoded;
            try {
              first = await decode(readImageFile(e.path), { size: undefined, channels, fit, maxPixels });
            } catch {
              continue; // reported with its reason in the file loop below
            }
            size = [first.height, first.width];
            break;
          }
        }
        // A few files in flight per core, so that no thread (or decoding process) waits on a round trip.
        const decoded = await mapConcurrently(chunk, concurrency === 1 ? 1 : 4 * concurrency, decodeOne);
        const kept: Array<{ e: Entry; d: Decoded }> = [];
        chunk.forEach((e, i) => {
          const d = decoded[i]!;
          if ('skip' in d) sink.skip(e.source, d.skip);
          else kept.push({ e, d });
        });
        if (kept.length === 0) continue;
        const [H, W] = size!;
        const D = H * W * channels;
        const inputs = new Uint8Array(kept.length * D);
        kept.forEach(({ d }, i) => inputs.set(d.pixels, i * D));
        const info: DatasetInfo = {
          inputShape: [H, W, channels],
          layout: 'HWC',
          scaling: { scale: 1 / 255, offset: 0 },
          classes: scan.classes,
          inputType: 'uint8',
        };
        await sink.append(info, { inputs, labels: Int32Array.from(kept, ({ e }) => e.label), sources: kept.map(({ e }) => e.source) });
      }
      return await sink.finish(total, {
        folder: o.folder,
        out: o.out,
        mode: scan.mode,
        classes: scan.classes,
        size: size!,
        channels,
        fit,
        ignored: scan.ignored,
        emptyClasses: scan.emptyClasses,
      });
    } catch (err) {
      await sink.fail(err, failed);
      throw err;
    } finally {
      await pool?.close();
    }
  }
}

/** `f` over `items` with at most `concurrency` at once; results in order. */
export async function mapConcurrently<T, R>(items: readonly T[], concurrency: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]!);
      }
    }),
  );
  return out;
}
