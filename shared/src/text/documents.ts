/**
 * Train/test splits of a text corpus by whole documents, never inside one: a document's blocks
 * all land in one part, so no test position has seen its own text in training. Stratified by a
 * per-document group (the Brown corpus's genre) so every group is represented in every part.
 */
import { mulberry32 } from '../synthetic.js';

export interface SplitDocument {
  readonly key: string;
  /** Documents with the same stratum are split separately (e.g. a genre); default: one stratum. */
  readonly stratum?: string;
}

/**
 * Assigns each document to a part. `parts` gives each held-out part's fraction (e.g. `{ test: 0.1,
 * val: 0.1 }`); the rest go to `rest` (default `train`). Per stratum, documents are ordered by key,
 * shuffled by a generator seeded from (seed, stratum), and each held-out part takes
 * round(fraction × n) of them, at least one where the stratum has more documents than parts.
 * The result depends only on the keys, strata, fractions and seed, not on the input order.
 */
export function splitDocuments(docs: readonly SplitDocument[], parts: Readonly<Record<string, number>>, seed: number, rest = 'train'): Map<string, string> {
  const names = Object.keys(parts).sort();
  const total = names.reduce((s, n) => s + parts[n]!, 0);
  for (const n of names) {
    const f = parts[n]!;
    if (!(f > 0 && f < 1)) throw new RangeError(`split ${n}=${f}: a fraction must be in (0, 1)`);
    if (n === rest) throw new RangeError(`split part ${n} is the name of the rest`);
  }
  if (total >= 1) throw new RangeError(`split fractions add up to ${total}; they must leave documents for ${rest}`);
  const seen = new Set<string>();
  const strata = new Map<string, string[]>();
  for (const d of docs) {
    if (seen.has(d.key)) throw new RangeError(`document ${d.key} appears twice`);
    seen.add(d.key);
    const s = d.stratum ?? '';
    strata.set(s, [...(strata.get(s) ?? []), d.key]);
  }
  const out = new Map<string, string>();
  for (const [stratum, keys] of [...strata].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    keys.sort();
    const rand = mulberry32((seed ^ hash32(stratum)) >>> 0);
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [keys[i], keys[j]] = [keys[j]!, keys[i]!];
    }
    let at = 0;
    for (const n of names) {
      let take = Math.round(parts[n]! * keys.length);
      if (take === 0 && keys.length > names.length) take = 1;
      for (const k of keys.slice(at, at + take)) out.set(k, n);
      at += take;
    }
    for (const k of keys.slice(at)) out.set(k, rest);
  }
  return out;
}

/** FNV-1a over the string's UTF-16 code units: a stable 32-bit seed per stratum. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
