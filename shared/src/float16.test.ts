import { util } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { decodeFloat16, encodeFloat16, float16Bits, float16Value } from './float16.js';

/** Independent decoder straight from the IEEE 754 definition, in float64. */
function referenceDecode(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * Math.pow(2, -24);
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * Math.pow(2, e - 15) * (1 + m / 1024);
}

const isNaNBits = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

describe('float16', () => {
  it('decodes all 65,536 bit patterns like the IEEE 754 definition', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const decoded = decodeFloat16(all);
    for (let h = 0; h < 65536; h++) {
      const want = referenceDecode(h);
      if (Number.isNaN(want)) expect(Number.isNaN(decoded[h])).toBe(true);
      else expect(Object.is(decoded[h], want)).toBe(true);
      if (!Number.isNaN(want)) expect(Object.is(float16Value(h), want)).toBe(true);
    }
  });

  it('re-encodes every non-NaN pattern to itself (both encoders) and every NaN to a quiet NaN', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const encoded = encodeFloat16(decodeFloat16(all));
    for (let h = 0; h < 65536; h++) {
      if (isNaNBits(h)) {
        expect(encoded[h]! & 0x7fff).toBe(0x7e00);
        expect(float16Bits(referenceDecode(h))).toBe(0x7e00);
      } else {
        expect(encoded[h]).toBe(h);
        expect(float16Bits(referenceDecode(h))).toBe(h);
      }
    }
  });

  it('rounds every midpoint between adjacent halves to the even one, and nudged midpoints to the nearer', () => {
    // Positive finite halves 0x0000..0x7bff, and the midpoint between 65504 and "65536" (Inf).
    const f = new Float32Array(3);
    for (let h = 0; h < 0x7c00; h++) {
      const lo = referenceDecode(h);
      const hi = h === 0x7bff ? 65536 : referenceDecode(h + 1);
      const mid = (lo + hi) / 2; // exact in float32: halves have 11 significant bits
      const even = (h & 1) === 0 ? h : h + 1;
      f[0] = mid;
      expect(f[0]).toBe(mid);
      f[1] = Math.fround(mid - (mid - lo) / 4); // just below the midpoint
      f[2] = Math.fround(mid + (hi - mid) / 4); // just above
      const [m, below, above] = encodeFloat16(f);
      expect(m).toBe(even === 0x7c00 ? 0x7c00 : even);
      expect(below).toBe(h);
      expect(above).toBe(h + 1);
      expect(float16Bits(mid)).toBe(m);
      // Doubles that float32 cannot hold take the float64 path: one rounding, same answer.
      expect(float16Bits(mid - (mid - lo) * 1e-9)).toBe(h);
      expect(float16Bits(mid + (hi - mid) * 1e-9)).toBe(h + 1);
    }
  });

  it('handles the boundary cases', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [7.999, 0x4800], // 7.999 → 8 (apache-arrow 21 gives 4)
      [65504, 0x7bff], // largest finite
      [65519.99, 0x7bff],
      [65520, 0x7c00], // midpoint to 2^16 rounds to even → Infinity
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // halfway to the smallest subnormal: ties to even (0)
      [1.5 * 2 ** -25, 0x0001],
      [1e-8, 0x0000], // underflows to +0 (apache-arrow 21 gives -Infinity)
      [-1e-8, 0x8000],
      [2 ** -14 - 2 ** -25, 0x0400], // rounds up across the subnormal/normal boundary
      [NaN, 0x7e00],
    ];
    for (const [x, bits] of cases) expect(float16Bits(x), `float16Bits(${x})`).toBe(bits);
    const f32 = Float32Array.from(cases.map(([x]) => x));
    const enc = encodeFloat16(f32);
    cases.forEach(([x, bits], i) => {
      // float32 cannot hold 7.999, 65519.99 or 1e-8 exactly; its rounding must not change the half.
      expect(enc[i], `encodeFloat16(${x})`).toBe(bits);
    });
  });

  it('documents why the library encoder is not used: apache-arrow 21 gets these wrong', () => {
    expect(util.float64ToUint16(7.999)).not.toBe(0x4800);
    expect(util.float64ToUint16(7.999)).not.toBe(float16Bits(7.999));
  });
});
