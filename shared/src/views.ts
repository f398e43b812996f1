/**
 * Augmented views of an image, drawn by seed and replayed exactly. The server stores each
 * view's parameters next to the teacher's logits for it; the trainer applies the same transform
 * to the stored image and trains on that view with those logits. Both sides call this file, so
 * a view is the same bytes on both: the transforms only move stored values (a flip, a shift
 * with zero fill), they never compute new ones.
 */
import { z } from 'zod';

export const ViewAugmentSchema = z
  .object({
    /** Shift by up to this many pixels in x and in y (uniform integers), filling with zeros. */
    shift: z.number().int().min(0).max(64).default(0),
    /** Mirror left–right with probability 1/2. */
    flip: z.boolean().default(false),
  })
  .strict();

export const ViewSpecSchema = z
  .object({
    /** Views per image, K. */
    count: z.number().int().positive().max(1024),
    seed: z.number().int().min(0).max(0xffffffff),
    augment: ViewAugmentSchema,
  })
  .strict();
export type ViewSpec = z.infer<typeof ViewSpecSchema>;
export type ViewSpecInput = z.input<typeof ViewSpecSchema>;

/** One view's parameters. */
export interface ViewParams {
  readonly dx: number;
  readonly dy: number;
  readonly flip: boolean;
}

/** 32-bit mix (murmur3's finaliser): seed, id and view index → an independent stream per view. */
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A small deterministic generator for one (seed, id, view): uniform 32-bit integers. */
function stream(seed: number, id: number, view: number): () => number {
  let s = mix(mix(mix(seed >>> 0) ^ (id >>> 0) ^ Math.floor(id / 0x100000000)) ^ view);
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * The parameters of view `view` of the image with id `id`. They depend on nothing else (not on
 * row order, shards or workers), so any process draws the same view.
 */
export function drawView(spec: ViewSpec, id: number, view: number): ViewParams {
  const next = stream(spec.seed, id, view);
  const span = 2 * spec.augment.shift + 1;
  const dx = (next() % span) - spec.augment.shift;
  const dy = (next() % span) - spec.augment.shift;
  const flip = spec.augment.flip ? (next() & 1) === 1 : false;
  return { dx, dy, flip };
}

/** Which of the K stored views an image uses in an epoch (the trainer's draw, by its own seed). */
export function pickView(seed: number, epoch: number, id: number, count: number): number {
  return stream(seed ^ 0x9e3779b9, id, epoch)() % count;
}

export class ViewError extends Error {
  override readonly name = 'ViewError';
}

/** Image geometry for transforms: height, width, channels and where the channels are. */
export interface ImageGeometry {
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly layout: 'HWC' | 'CHW';
}

export function imageGeometry(info: { inputShape: readonly number[]; layout: 'HWC' | 'CHW' | 'flat' }): ImageGeometry {
  if (info.layout === 'flat' || info.inputShape.length !== 3) {
    throw new ViewError(
      `views need image samples (layout HWC or CHW with a 3-d shape); this dataset's samples are ${info.layout} [${info.inputShape.join(', ')}]`,
    );
  }
  const [a, b, c] = info.inputShape as [number, number, number];
  return info.layout === 'HWC' ? { height: a, width: b, channels: c, layout: 'HWC' } : { height: b, width: c, channels: a, layout: 'CHW' };
}

/**
 * Write the view of `src` (one image, stored values) into `dst`: mirror left–right if `flip`,
 * then move by (dx, dy) pixels, zeros where nothing lands. out(x, y) = in'(x − dx, y − dy).
 */
export function applyView<T extends Float32Array | Uint8Array>(src: T, dst: T, g: ImageGeometry, p: ViewParams): T {
  const { height: H, width: W, channels: C } = g;
  dst.fill(0);
  for (let y = 0; y < H; y++) {
    const sy = y - p.dy;
    if (sy < 0 || sy >= H) continue;
    for (let x = 0; x < W; x++) {
      let sx = x - p.dx;
      if (sx < 0 || sx >= W) continue;
      if (p.flip) sx = W - 1 - sx;
      if (g.layout === 'HWC') {
        const o = (y * W + x) * C;
        const i = (sy * W + sx) * C;
        for (let c = 0; c < C; c++) dst[o + c] = src[i + c]!;
      } else {
        for (let c = 0; c < C; c++) dst[(c * H + y) * W + x] = src[(c * H + sy) * W + sx]!;
      }
    }
  }
  return dst;
}

/** The identity view (no shift, no flip): K = 1 with an empty augmentation stores the clean image. */
export const IDENTITY_VIEW: ViewParams = { dx: 0, dy: 0, flip: false };

/** Each id `count` times in a row: the ids of a view cache's rows, image-major. */
export function repeatIds<T extends Int32Array | BigInt64Array>(ids: T, count: number): T {
  const out = (ids instanceof BigInt64Array ? new BigInt64Array(ids.length * count) : new Int32Array(ids.length * count)) as T;
  for (let i = 0; i < ids.length; i++) out.fill(ids[i]! as never, i * count, (i + 1) * count);
  return out;
}

/**
 * The rows a view cache stores for `ids.length` images (`stored`, D values each): every image's
 * K views (view 0 … K − 1, drawn by `drawView`), image-major, with the ids repeated to match.
 * The in-process precompute and every distributed worker call this, so they store the same views.
 */
export function expandViews<T extends Float32Array | Uint8Array, I extends Int32Array | BigInt64Array>(
  spec: ViewSpec,
  g: ImageGeometry,
  ids: I,
  stored: T,
  D: number,
): { ids: I; raw: T } {
  const n = ids.length;
  const K = spec.count;
  const raw = (stored instanceof Uint8Array ? new Uint8Array(n * K * D) : new Float32Array(n * K * D)) as T;
  for (let i = 0; i < n; i++) {
    const image = stored.subarray(i * D, (i + 1) * D) as T;
    const id = Number(ids[i]!);
    for (let v = 0; v < K; v++) applyView(image, raw.subarray((i * K + v) * D, (i * K + v + 1) * D) as T, g, drawView(spec, id, v));
  }
  return { ids: repeatIds(ids, K), raw };
}
