/**
 * One image file → 8-bit pixels of the import's size and channels, by sharp (libvips): what the
 * image-folder and table imports decode with, in process or in a decoding process (DecodePool).
 */
import { readFile, stat } from 'node:fs/promises';
import sharp from 'sharp';

export type Fit = 'cover' | 'contain' | 'fill';

/** What every image of an import is decoded to. */
export interface DecodeOptions {
  readonly size: readonly [number, number] | undefined;
  readonly channels: 1 | 3;
  readonly fit: Fit;
  readonly maxPixels: number;
}

export interface Decoded {
  readonly pixels: Buffer;
  readonly width: number;
  readonly height: number;
}

/** One image → 8-bit pixels (HWC) of the target size and channels; throws with the reason. */
export async function decode(bytes: Buffer | Uint8Array, o: DecodeOptions): Promise<Decoded> {
  if (bytes.length === 0) throw new Error('empty file');
  const image = sharp(bytes, { limitInputPixels: o.maxPixels, failOn: 'warning' });
  // The size, when the import has none yet: the image's own, oriented. Otherwise no metadata
  // call (a second sharp call per image, 12 % of the time on small JPEGs): an image already at
  // the target size comes out of resize unresampled (libvips copies at scale 1; the lossless
  // round trip in the tests stays bit-identical).
  let size = o.size;
  if (size === undefined) {
    const meta = await image.metadata();
    const swapped = (meta.orientation ?? 1) >= 5;
    size = swapped ? [meta.width!, meta.height!] : [meta.height!, meta.width!];
  }
  const [H, W] = size;
  let pipeline = image.rotate().flatten({ background: { r: 0, g: 0, b: 0 } });
  pipeline = pipeline.resize(W, H, { fit: o.fit, position: 'centre', background: { r: 0, g: 0, b: 0, alpha: 1 }, kernel: 'lanczos3' });
  pipeline = pipeline.toColourspace(o.channels === 1 ? 'b-w' : 'srgb');
  const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.width !== W || info.height !== H || info.channels !== o.channels) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${W}×${H}×${o.channels}`);
  }
  return { pixels: data, width: W, height: H };
}

/** A file refused for a reason already put in words (by a decoding process: DecodePool). */
export class ImageRefused extends Error {
  override readonly name = 'ImageRefused';
}

/** Why sharp refused a file, in one line. */
export function reasonOf(err: unknown): string {
  if (err instanceof ImageRefused) return err.message;
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

/** Read a file (a regular file only) and decode it; throws with the reason it cannot be imported. */
export async function decodeFile(path: Buffer, o: DecodeOptions): Promise<Decoded> {
  const st = await stat(path);
  if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: st.isDirectory() ? 'EISDIR' : undefined });
  return decode(await readFile(path), o);
}
