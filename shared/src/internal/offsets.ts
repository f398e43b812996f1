/**
 * Index of the segment holding `row`, given each segment's first row followed by the total row
 * count (ascending): the largest i with offsets[i] ≤ row. `what` names the source in the error.
 */
export function segmentOf(offsets: readonly number[], row: number, what: string): number {
  const total = offsets.at(-1)!;
  if (!Number.isInteger(row) || row < 0 || row >= total) throw new RangeError(`${what}: row ${row} is outside [0, ${total})`);
  let lo = 0;
  let hi = offsets.length - 2; // the last entry is the total, not a segment
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (offsets[mid]! <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
