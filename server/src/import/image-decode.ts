/**
 * One image file → 8-bit pixels of the import's size and channels: what the image-folder and
 * table imports decode with, in process or in a decoding process (DecodePool).
 *
 * Two libraries, one per kind of file. The common case, an 8-bit JPEG or PNG without alpha (gray
 * or RGB), goes through @napi-rs/image (Rust's `image` crate: zune-jpeg and png; fast_image_resize):
 * about 0.1 ms per small image, where sharp (libvips) spends 1.7 ms setting up its pipeline for
 * the same 56×56 JPEG — libvips is built for large images. Everything else goes through sharp,
 * which decodes more formats and converts more faithfully: WebP, GIF, TIFF and AVIF, CMYK JPEGs
 * (through a CMYK profile), 16-bit images, alpha (composited onto black), and PNGs whose EXIF
 * orientation is in an eXIf chunk (the `image` crate reads EXIF orientation from JPEGs only). A
 * file the fast path cannot decode goes to sharp too, which decodes it or says why not. Both
 * paths orient by EXIF and resample with a Lanczos-3 kernel; they are not bit-identical (the two
 * Lanczos implementations round differently, and gray is the Rec. 709 luma of the sRGB values on
 * the fast path, libvips' own conversion on the other), so `decoderOf` says which one a file gets.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as NapiImage from '@napi-rs/image';
import type { Transformer } from '@napi-rs/image';
import { imageSize } from 'image-size';
import type { Sharp, SharpOptions } from 'sharp';

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
  return (await decodeFast(bytes, o)) ?? decodeBySharp(bytes, o);
}

/**
 * The fast path alone: the pixels, or undefined for a file that is sharp's (see the file's
 * comment), including one the fast decoder refuses. Throws for an image over the pixel limit.
 * The decode runs on libuv's threads, so several in flight use every core.
 */
export async function decodeFast(bytes: Uint8Array, o: DecodeOptions): Promise<Decoded | undefined> {
  const fast = fastPath(bytes, o);
  if (fast === undefined) return undefined;
  try {
    return fast.finish(await fast.image.rawPixels());
  } catch {
    return undefined; // the fast decoder refuses it: sharp decodes it or says why not
  }
}

/**
 * A regular file's bytes; throws with the reason it cannot be imported. Synchronous: here an
 * asynchronous read of a small file cost 150 µs, a synchronous one 20 µs.
 */
export function readImageFile(path: Buffer): Buffer {
  const st = statSync(path);
  if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: st.isDirectory() ? 'EISDIR' : undefined });
  const bytes = readFileSync(path);
  if (bytes.length === 0) throw new Error('empty file');
  return bytes;
}

/** Which library decodes a file (see the file's comment): `fast` is @napi-rs/image, `sharp` the rest. */
export function decoderOf(bytes: Uint8Array): 'fast' | 'sharp' {
  return fastHeader(bytes, Number.POSITIVE_INFINITY) === undefined || fastDecoder() === undefined ? 'sharp' : 'fast';
}

let fastLoaded: typeof NapiImage | null | undefined;

/**
 * @napi-rs/image, loaded on first use (synchronously: it is CommonJS), or undefined where it has
 * no binary for this platform — then every file goes to sharp.
 */
function fastDecoder(): typeof NapiImage | undefined {
  if (fastLoaded === undefined) {
    try {
      fastLoaded = createRequire(import.meta.url)('@napi-rs/image') as typeof NapiImage;
    } catch {
      fastLoaded = null;
    }
  }
  return fastLoaded ?? undefined;
}

// @napi-rs/image's enums (its runtime module exports them empty): FastResizeFilter.Lanczos3, ResizeFit.Fill.
const FAST_LANCZOS3 = 5;
const FIT_FILL = 1;

/** What the fast path needs from a file's header. */
interface FastHeader {
  /** Before orientation. */
  readonly width: number;
  readonly height: number;
  readonly gray: boolean;
  /** The EXIF orientation (1–8; 1 when none). */
  readonly orientation: number;
}

/**
 * The header of a file for the fast path, or undefined when the file goes to sharp: from the
 * bytes alone, nothing decoded (the `image` crate decodes a whole image even to report its size,
 * so the pixel limit is checked here; an image over it is refused, whichever path it would take).
 */
function fastHeader(bytes: Uint8Array, maxPixels: number): FastHeader | undefined {
  let head: ReturnType<typeof imageSize>;
  try {
    head = imageSize(bytes);
  } catch {
    return undefined; // not a format image-size knows: sharp decodes it or says why not
  }
  if (head.type !== 'jpg' && head.type !== 'png') return undefined;
  if (head.width * head.height > maxPixels)
    throw new ImageRefused(`over the pixel limit (decompression-bomb guard): ${head.width}×${head.height} is over ${maxPixels} pixels`);
  if (head.type === 'jpg') {
    const frame = jpegFrame(bytes);
    if (frame === undefined || frame.precision !== 8 || (frame.components !== 1 && frame.components !== 3)) return undefined;
    return { width: head.width, height: head.height, gray: frame.components === 1, orientation: head.orientation ?? 1 };
  }
  // PNG: IHDR's bit depth and colour type (0 gray, 2 RGB; palette and alpha go to sharp).
  const depth = bytes[24];
  const colour = bytes[25];
  if (depth !== 8 || (colour !== 0 && colour !== 2) || pngHasExif(bytes)) return undefined;
  return { width: head.width, height: head.height, gray: colour === 0, orientation: 1 };
}

/**
 * The fast path for a file (see the file's comment): the decoder with its operations queued
 * (they run when its pixels are asked for), and what turns its pixels into the import's; or
 * undefined for a file that goes to sharp.
 */
function fastPath(bytes: Uint8Array, o: DecodeOptions): { image: Transformer; finish(decoded: Buffer): Decoded } | undefined {
  const head = fastHeader(bytes, o.maxPixels);
  const fast = fastDecoder();
  if (head === undefined || fast === undefined) return undefined;
  const swapped = head.orientation >= 5;
  const [h0, w0] = swapped ? [head.width, head.height] : [head.height, head.width];
  const [H, W] = o.size ?? [h0, w0];
  const image = new fast.Transformer(bytes).rotate();
  // Resampled only when the size changes: an image already at the target size keeps its pixels.
  // fastResize (the fast_image_resize crate's SIMD Lanczos-3) took 112 µs an image where the
  // `image` crate's resize took 150 (one 56×56 JPEG at a time, decode included), within 5 gray
  // levels of it (mean 0.10); it returns RGBA, so gray comes after it, as gray + alpha. Its own
  // cover mode does not crop at the centre, so it resizes to the whole covering (or contained)
  // size here and `finish` crops or letterboxes, centred as sharp does.
  let [h, w] = [H, W];
  const resized = h0 !== H || w0 !== W;
  if (resized) {
    if (o.fit !== 'fill') {
      const scale = o.fit === 'cover' ? Math.max(W / w0, H / h0) : Math.min(W / w0, H / h0);
      [h, w] = [Math.max(1, Math.round(h0 * scale)), Math.max(1, Math.round(w0 * scale))];
      // Rounding must not leave a covering image short of the target, or a contained one over it.
      [h, w] = o.fit === 'cover' ? [Math.max(h, H), Math.max(w, W)] : [Math.min(h, H), Math.min(w, W)];
    }
    image.fastResize({ width: w, height: h, filter: FAST_LANCZOS3, fit: FIT_FILL });
  }
  if (o.channels === 1 && (resized || !head.gray)) image.grayscale();
  // Bytes per pixel of what comes out: gray (+ alpha) or RGB (+ alpha) after a resize; as decoded otherwise.
  const stride = resized ? (o.channels === 1 ? 2 : 4) : head.gray || o.channels === 1 ? 1 : 3;
  const finish = (decoded: Buffer): Decoded => {
    if (decoded.length !== h * w * stride) throw new Error(`decoded to ${decoded.length} bytes, expected ${w}×${h}×${stride}`);
    if (stride === o.channels && h === H && w === W) return { pixels: decoded, width: W, height: H };
    // Alpha dropped; a gray image asked for in colour: its value in every channel; 'cover': the
    // centre cut out; 'contain': centred between black bars.
    const C = o.channels;
    const pixels = Buffer.alloc(H * W * C);
    const [cy, cx] = [Math.max(0, (h - H) >> 1), Math.max(0, (w - W) >> 1)];
    const [top, left] = [Math.max(0, (H - h) >> 1), Math.max(0, (W - w) >> 1)];
    const [rows, cols] = [Math.min(h, H), Math.min(w, W)];
    for (let y = 0; y < rows; y++) {
      let to = ((top + y) * W + left) * C;
      for (let from = ((cy + y) * w + cx) * stride, end = from + cols * stride; from < end; from += stride, to += C) {
        if (C === 1) pixels[to] = decoded[from]!;
        else if (stride === 1) pixels.fill(decoded[from]!, to, to + 3);
        else decoded.copy(pixels, to, from, from + 3);
      }
    }
    return { pixels, width: W, height: H };
  };
  return { image, finish };
}

/**
 * A JPEG's sample precision and number of components (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK) from its
 * frame header (SOFn); undefined when none comes before the first scan. Neither image-size nor
 * @napi-rs/image reports them, and the fast decoder converts CMYK without the file's profile, so
 * CMYK files (and 12-bit ones) go to sharp.
 */
function jpegFrame(b: Uint8Array): { precision: number; components: number } | undefined {
  let at = 2; // after SOI
  while (at + 9 < b.length) {
    if (b[at] !== 0xff) return undefined;
    const marker = b[at + 1]!;
    if (marker === 0xff) {
      at++; // a fill byte
      continue;
    }
    // SOF0–SOF15 except DHT (C4), JPG (C8) and DAC (CC): length (2), precision (1), height (2), width (2), components (1).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return { precision: b[at + 4]!, components: b[at + 9]! };
    if (marker === 0xd9 || marker === 0xda) return undefined; // end of image or start of scan
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2; // TEM, RSTn: no length
      continue;
    }
    at += 2 + ((b[at + 2]! << 8) | b[at + 3]!);
  }
  return undefined;
}

/** Whether a PNG has an eXIf chunk before its image data (where an EXIF orientation would be). */
function pngHasExif(b: Uint8Array): boolean {
  let at = 8; // after the signature: chunks of length (4), type (4), data, CRC (4)
  while (at + 8 <= b.length) {
    const type = String.fromCharCode(b[at + 4]!, b[at + 5]!, b[at + 6]!, b[at + 7]!);
    if (type === 'eXIf') return true;
    if (type === 'IDAT' || type === 'IEND') return false;
    at += 12 + b[at]! * 2 ** 24 + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!);
  }
  return false;
}

let sharpLoaded: Promise<(input: Buffer | Uint8Array, options: SharpOptions) => Sharp> | undefined;

/**
 * sharp, loaded when a file first needs it (0.14 s here, which an import of JPEGs alone does not
 * pay), with one libvips thread per image, process-wide: on small images that measured fastest
 * (a one-off measurement on 800 56×56 JPEGs: 540 images/s, against 487 with 2 and 452 with the
 * default); the decoding processes are the parallelism.
 */
function loadSharp(): Promise<(input: Buffer | Uint8Array, options: SharpOptions) => Sharp> {
  sharpLoaded ??= import('sharp').then(({ default: sharp }) => {
    sharp.concurrency(1);
    return sharp;
  });
  return sharpLoaded;
}

/** sharp's path: every file the fast path does not take (in a decoding process, DecodePool, when the import has one). */
export async function decodeBySharp(bytes: Buffer | Uint8Array, o: DecodeOptions): Promise<Decoded> {
  const sharp = await loadSharp();
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

/** A file refused for a reason already put in words (the pixel limit read from a header; a decoding process's answer: DecodePool). */
export class ImageRefused extends Error {
  override readonly name = 'ImageRefused';
}

/** Why a file cannot be imported, in one line. */
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
