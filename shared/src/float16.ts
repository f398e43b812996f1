/**
 * IEEE 754 binary16 ("half") encoding and decoding.
 *
 * apache-arrow 21 ships `util.float64ToUint16`, but it truncates instead of rounding and
 * mishandles small magnitudes (7.999 → 4, 1e-8 → -Infinity), so Distillate uses its own
 * encoder. Rounding is round-to-nearest, ties-to-even, as IEEE 754 requires; values at or
 * above 65520 (the midpoint between the largest half, 65504, and 2^16) overflow to ±Infinity;
 * magnitudes below 2^-14 become subnormals; every NaN becomes the quiet NaN 0x7e00 (sign kept).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Encode one float32 bit pattern (given as its uint32) as half bits. Works on bits so that
 * it is exact: a float32 has every bit a half rounding decision needs.
 */
function float32BitsToHalfBits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) {
    // Inf or NaN. NaN payloads are not preserved; every NaN becomes a quiet NaN.
    return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  if (abs >= 0x477ff000) return sign | 0x7c00; // |x| >= 65520 rounds to Infinity
  if (abs < 0x38800000) {
    // Result is a half subnormal (or zero): units of 2^-24.
    if (abs < 0x33000000) return sign; // |x| <= 2^-25 (exact 2^-25 ties to even, i.e. 0)
    const exp = abs >>> 23;
    const mant = (abs & 0x7fffff) | 0x800000; // value = mant * 2^(exp-150)
    const shift = 126 - exp; // value / 2^-24 = mant >> shift
    const q = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q);
  }
  // Normal half: rebias the exponent (127 → 15) and drop 13 mantissa bits, rounding to even.
  // A carry out of the mantissa correctly bumps the exponent.
  let h = (abs >>> 13) - (112 << 10);
  const rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h += 1;
  return sign | h;
}

/**
 * Encode a JS number (float64) as half bits with a single rounding step. Rounding the double
 * to float32 first would round twice and could land on the wrong side of a half midpoint.
 */
export function float16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  f32[0] = x;
  const viaF32 = u32[0]!;
  // A float32 that equals x exactly (the common case for logits) can take the exact bit path.
  if (f32[0] === x) return float32BitsToHalfBits(viaF32);
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24);
  let e = Math.floor(Math.log2(a));
  // log2 can be off by one ulp near powers of two; fix the exponent exactly.
  if (2 ** e > a) e -= 1;
  else if (2 ** (e + 1) <= a) e += 1;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e += 1;
  }
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function halfBitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Decode table: 65,536 float32 values (256 KiB), built once on first use. */
let decodeTable: Float32Array | undefined;
function table(): Float32Array {
  if (decodeTable === undefined) {
    decodeTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) decodeTable[h] = halfBitsToNumber(h);
  }
  return decodeTable;
}

/** Decode one half bit pattern. */
export function float16Value(bits: number): number {
  return table()[bits & 0xffff]!;
}

/** Encode a Float32Array into half bits (one exact rounding per element). */
export function encodeFloat16(values: Float32Array, out: Uint16Array<ArrayBuffer> = new Uint16Array(values.length)): Uint16Array<ArrayBuffer> {
  if (out.length < values.length) throw new RangeError(`encodeFloat16: output holds ${out.length} values, need ${values.length}`);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) out[i] = float32BitsToHalfBits(bits[i]!);
  return out;
}

/** Decode half bits into a Float32Array. Every half is exactly representable in float32. */
export function decodeFloat16(bits: Uint16Array, out: Float32Array<ArrayBuffer> = new Float32Array(bits.length)): Float32Array<ArrayBuffer> {
  if (out.length < bits.length) throw new RangeError(`decodeFloat16: output holds ${out.length} values, need ${bits.length}`);
  const t = table();
  for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]!]!;
  return out;
}
