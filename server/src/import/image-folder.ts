/**
 * Import a folder of images into a dataset file, as torchvision's ImageFolder reads one: class
 * sub-folders give the labels (class names from the folder names, in byte order), a flat folder
 * gives an unlabelled pool. Images are decoded by sharp (libvips), oriented by their EXIF tag,
 * converted to 8-bit gray or sRGB (alpha composited onto black, CMYK and 16-bit converted),
 * resized to one size by cover (centre crop), contain (letterbox, black bars) or fill (stretch),
 * and stored as uint8 HWC rows scaled by 1/255, with a `source` column holding each row's path
 * relative to the folder.
 *
 * Memory stays bounded: files are listed (names only), then decoded a chunk at a time on every
 * core and written in order. A file that cannot be imported (corrupt, truncated, empty, not an
 * image, over the pixel limit, unreadable) is skipped with its reason in the import report, or
 * stops the import (`onError: 'fail'`); more skipped than `maxSkipped` fails the import. The
 * output is written atomically: a failed import leaves no file.
 */
import { availableParallelism } from 'node:os';
import { readFile, readdir, stat } from 'node:fs/promises';
import sharp from 'sharp';
import type { DatasetInfo } from '@distillate/shared';
import { ImportError, ImportSink, type SkippedFile } from './sink.js';

export { ImportError, reportPath, type SkippedFile } from './sink.js';

export type Fit = 'cover' | 'contain' | 'fill';

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

/** Extensions sharp decodes from its npm build (no BMP): what counts as an image file. */
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

export interface Decoded {
  readonly pixels: Buffer;
  readonly width: number;
  readonly height: number;
}

/** One image → 8-bit pixels (HWC) of the target size and channels; throws with the reason. */
export async function decode(
  bytes: Buffer | Uint8Array,
  o: { size: readonly [number, number] | undefined; channels: 1 | 3; fit: Fit; maxPixels: number },
): Promise<Decoded> {
  if (bytes.length === 0) throw new Error('empty file');
  const image = sharp(bytes, { limitInputPixels: o.maxPixels, failOn: 'warning' });
  const meta = await image.metadata();
  const swapped = (meta.orientation ?? 1) >= 5;
  const [w0, h0] = swapped ? [meta.height, meta.width] : [meta.width, meta.height];
  const [H, W] = o.size ?? [h0, w0];
  let pipeline = image.rotate().flatten({ background: { r: 0, g: 0, b: 0 } });
  // Already the target size: no resampling (a lossless round trip stays bit-identical).
  if (w0 !== W || h0 !== H) {
    pipeline = pipeline.resize(W, H, { fit: o.fit, position: 'centre', background: { r: 0, g: 0, b: 0, alpha: 1 }, kernel: 'lanczos3' });
  }
  pipeline = pipeline.toColourspace(o.channels === 1 ? 'b-w' : 'srgb');
  const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.width !== W || info.height !== H || info.channels !== o.channels) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${W}×${H}×${o.channels}`);
  }
  return { pixels: data, width: W, height: H };
}

/** Why sharp refused a file, in one line. */
export function reasonOf(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ELOOP') return 'a symbolic link loop';
  if (e.code === 'EACCES' || e.code === 'EPERM') return 'not readable (permission denied)';
  if (e.code === 'ENOENT') return 'no such file (a dangling link?)';
  if (e.code === 'EISDIR') return 'a directory';
  const message = (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
  if (/pixel limit/i.test(message)) return `over the pixel limit (decompression-bomb guard): ${message}`;
  if (/unsupported image format/i.test(message)) return 'not an image (unsupported or unrecognised format)';
  return message;
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
    // One libvips thread per image (process-wide): on small images it measured fastest (a
    // one-off measurement on 800 56×56 JPEGs: 540 images/s, against 487 with 2 and 452 with the default).
    sharp.concurrency(1);

    const sink = new ImportSink({ out: o.out, onError, maxSkipped, unit: 'image files' });
    let size = o.size;
    let done = 0;
    const decodeOne = async (e: Entry): Promise<Decoded | undefined> => {
      try {
        const st = await stat(e.path);
        if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: st.isDirectory() ? 'EISDIR' : undefined });
        return await decode(await readFile(e.path), { size, channels, fit, maxPixels });
      } catch (err) {
        sink.skip(e.source, reasonOf(err));
        return undefined;
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
            const first = await readFile(e.path)
              .then((b) => decode(b, { size: undefined, channels, fit, maxPixels }))
              .catch(() => undefined);
            if (first !== undefined) {
              size = [first.height, first.width];
              break;
            }
          }
        }
        const decoded = await mapConcurrently(chunk, concurrency, decodeOne);
        const kept = chunk.map((e, i) => ({ e, d: decoded[i] })).filter((x): x is { e: Entry; d: Decoded } => x.d !== undefined);
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
