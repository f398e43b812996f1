/**
 * IDX files (the MNIST family's format): a big-endian header of magic 0x0000 <type> <ndims>,
 * one uint32 per dimension, then the values. Gzipped files are detected by their magic bytes.
 * http://yann.lecun.com/exdb/mnist/ describes the format.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

export class IdxFormatError extends Error {
  override readonly name = 'IdxFormatError';
}

export interface IdxArray {
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

const UBYTE = 0x08;

/** Parse an IDX ubyte array (images: 3 dims, labels: 1 dim). `file` names errors. */
export function parseIdx(bytes: Uint8Array, file: string, expectDims: number): IdxArray {
  let buf = bytes;
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = gunzipSync(buf);
    } catch (err) {
      throw new IdxFormatError(`${file}: gzip data is corrupt or truncated (${(err as Error).message})`);
    }
  }
  if (buf.length < 4) throw new IdxFormatError(`${file}: too short to be an IDX file (${buf.length} bytes)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0);
  const type = (magic >>> 8) & 0xff;
  const ndims = magic & 0xff;
  if (magic >>> 16 !== 0 || type !== UBYTE || ndims !== expectDims) {
    const want = (UBYTE << 8) | expectDims;
    throw new IdxFormatError(
      `${file}: bad magic number 0x${magic.toString(16).padStart(8, '0')}, expected 0x${want.toString(16).padStart(8, '0')} (unsigned bytes, ${expectDims} dimension${expectDims > 1 ? 's' : ''})`,
    );
  }
  const header = 4 + 4 * ndims;
  if (buf.length < header) throw new IdxFormatError(`${file}: truncated header`);
  const dims: number[] = [];
  for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length - header < count) {
    throw new IdxFormatError(`${file}: truncated: header declares ${dims.join('×')} = ${count} values but only ${buf.length - header} follow`);
  }
  if (buf.length - header > count) {
    throw new IdxFormatError(`${file}: ${buf.length - header - count} trailing bytes after the ${dims.join('×')} values the header declares`);
  }
  return { dims, data: buf.subarray(header, header + count) };
}

export async function readIdx(path: string, expectDims: number): Promise<IdxArray> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new IdxFormatError(`${path}: ${code === 'ENOENT' ? 'file not found' : `cannot read (${code ?? (err as Error).message})`}`);
  }
  return parseIdx(bytes, path, expectDims);
}

export interface IdxImageSet {
  readonly rows: number;
  readonly height: number;
  readonly width: number;
  readonly images: Uint8Array;
  readonly labels: Int32Array;
}

/** Read an images/labels pair and check that they agree. */
export async function readIdxPair(imagesPath: string, labelsPath: string, classes: number): Promise<IdxImageSet> {
  const images = await readIdx(imagesPath, 3);
  const labels = await readIdx(labelsPath, 1);
  const [n, h, w] = images.dims as [number, number, number];
  if (labels.dims[0] !== n) {
    throw new IdxFormatError(`${labelsPath}: has ${labels.dims[0]} labels but ${imagesPath} has ${n} images`);
  }
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const l = labels.data[i]!;
    if (l >= classes) throw new IdxFormatError(`${labelsPath}: label ${l} at index ${i} is outside the ${classes} classes`);
    out[i] = l;
  }
  return { rows: n, height: h, width: w, images: images.data, labels: out };
}
