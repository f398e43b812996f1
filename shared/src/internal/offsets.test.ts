import { describe, expect, it } from 'vitest';
import { segmentOf } from './offsets.js';

describe('segmentOf', () => {
  it('finds the segment holding a row, against a linear scan', () => {
    const offsets = [0, 3, 3, 10, 11, 20]; // one empty segment (3..3)
    for (let row = 0; row < 20; row++) {
      let i = 0;
      while (offsets[i + 1]! <= row) i++;
      expect(segmentOf(offsets, row, 'x')).toBe(i);
    }
  });
  it('rejects rows outside the range', () => {
    expect(() => segmentOf([0, 5], 5, 'file.arrow')).toThrow(/file\.arrow: row 5 is outside \[0, 5\)/);
    expect(() => segmentOf([0, 5], -1, 'x')).toThrow(RangeError);
    expect(() => segmentOf([0, 5], 1.5, 'x')).toThrow(RangeError);
  });
});
