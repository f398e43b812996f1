/** How many steps a session run takes: the recipe's, fewer for batches of large inputs. */
import { describe, expect, it } from 'vitest';
import { GROUP_INPUT_BYTES, stepsPerRunFor } from './train.js';

describe('stepsPerRunFor', () => {
  it("keeps the recipe's K for small inputs and lowers it so K batches stay within 64 MiB", () => {
    const batch = (rows: number, values: number) => rows * values * 4;
    expect(stepsPerRunFor(32, batch(128, 784))).toBe(32); // Fashion-MNIST: 401 KB a batch
    expect(stepsPerRunFor(32, batch(128, 3 * 64 * 64))).toBe(10); // 6.3 MB a batch
    expect(stepsPerRunFor(32, batch(128, 3 * 224 * 224))).toBe(1); // 77 MB a batch: one step per run
    expect(stepsPerRunFor(8, batch(128, 3 * 64 * 64))).toBe(8); // never more than the recipe asks
    expect(stepsPerRunFor(32, batch(128, 3 * 64 * 64)) * batch(128, 3 * 64 * 64)).toBeLessThanOrEqual(GROUP_INPUT_BYTES);
  });
});
