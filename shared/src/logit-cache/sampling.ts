/**
 * The sampled token cache's draws (Anshumann et al., "Sparse Logit Sampling", ACL 2025): at each
 * position, `n` draws from softmax(z / T), kept as the distinct ids drawn (ascending), how often
 * each was drawn, and the teacher's log-probability of each. Each position has its own generator,
 * seeded from (seed, row id, position), so a shard re-encoded anywhere — a resumed job, another
 * worker — holds the same draws, byte for byte. Padding positions draw nothing.
 *
 * (count / n) is an unbiased estimate of the teacher's distribution, so a cross-entropy against
 * it has the gradient of the full cross-entropy in expectation.
 */
import { idAt, type Ids } from '../internal/arrow-io.js';
import { mulberry32 } from '../synthetic.js';

export interface SampledRows {
  /** [rows × positions] distinct ids drawn at each position (0 at padding). */
  readonly unique: Uint8Array;
  /** [rows + 1] offsets of each row's entries in `indices`, `counts`, `logprobs`. */
  readonly offsets: Int32Array;
  readonly indices: Uint16Array | Uint32Array;
  readonly counts: Uint8Array;
  /** log softmax(z / T) of each kept id. */
  readonly logprobs: Float32Array;
}

/** murmur3's 32-bit finalizer over a running hash of the three parts. */
function positionSeed(seed: number, id: number, position: number): number {
  let h = seed >>> 0;
  for (const v of [id >>> 0, Math.floor(id / 2 ** 32) >>> 0, position >>> 0]) {
    h = Math.imul(h ^ v, 0x9e3779b1);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/**
 * Draws for `rows` rows of `positions` positions over a vocabulary of V: `scaled` is z / T
 * ([rows, positions, V]); `tokens` ([rows, positions], −1 = padding) marks what to skip.
 */
export function sampleRows(scaled: Float32Array, ids: Ids, positions: number, V: number, n: number, seed: number, tokens: Int32Array): SampledRows {
  const rows = ids.length;
  const unique = new Uint8Array(rows * positions);
  const offsets = new Int32Array(rows + 1);
  const cap = rows * positions * Math.min(n, V);
  const indices = V <= 1 << 16 ? new Uint16Array(cap) : new Uint32Array(cap);
  const counts = new Uint8Array(cap);
  const logprobs = new Float32Array(cap);
  const cdf = new Float64Array(V);
  const drawn = new Int32Array(n);
  let at = 0;
  for (let r = 0; r < rows; r++) {
    const id = idAt(ids, r);
    for (let p = 0; p < positions; p++) {
      const pos = r * positions + p;
      if (tokens[pos] === -1) continue;
      const z = scaled.subarray(pos * V, (pos + 1) * V);
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (z[v]! > max) max = z[v]!;
      let total = 0;
      for (let v = 0; v < V; v++) cdf[v] = total += Math.exp(z[v]! - max);
      const lse = max + Math.log(total);
      const rand = mulberry32(positionSeed(seed, id, p));
      for (let d = 0; d < n; d++) {
        const u = rand() * total;
        let lo = 0;
        let hi = V - 1;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cdf[mid]! > u) hi = mid;
          else lo = mid + 1;
        }
        drawn[d] = lo;
      }
      drawn.sort();
      let k = 0;
      for (let d = 0; d < n; d++) {
        if (d > 0 && drawn[d] === drawn[d - 1]) {
          counts[at - 1]!++;
          continue;
        }
        indices[at] = drawn[d]!;
        counts[at] = 1;
        logprobs[at] = z[drawn[d]!]! - lse;
        at++;
        k++;
      }
      unique[pos] = k;
    }
    offsets[r + 1] = at;
  }
  return { unique, offsets, indices: indices.subarray(0, at), counts: counts.subarray(0, at), logprobs: logprobs.subarray(0, at) };
}
