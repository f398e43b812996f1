import { featureSize, type StoredFeature } from '../features.js';
import { Field, Float16, Float32, Int32, Int64, List, Schema, Uint16, Uint32, Uint8 } from 'apache-arrow';
import { listType } from '../internal/arrow-io.js';
import type { Storage } from './manifest.js';

/** Token caches store ids as Uint16 when the vocabulary allows (2 bytes per kept entry, not 4). */
export function tokenIdType(vocabSize: number): Uint16 | Uint32 {
  return vocabSize <= 1 << 16 ? new Uint16() : new Uint32();
}

/**
 * Arrow schema of a cache shard; reader and writer both derive from it. `positions` makes it a
 * token cache: one row per block, each column one entry per position (FixedSizeLists of
 * positions × entries), and the sampled mode's variable-length lists.
 */
export function cacheShardSchema(
  storage: Storage,
  classes: number,
  labelStatistics: boolean,
  idType: 'int32' | 'int64',
  views = false,
  positions?: number,
  features: readonly StoredFeature[] = [],
): Schema {
  const fields: Field[] = [new Field('id', idType === 'int64' ? new Int64() : new Int32(), false)];
  const P = positions ?? 1;
  if (storage.mode === 'sampled') {
    if (positions === undefined) throw new RangeError('sampled storage is for token caches (a language-model teacher over a token dataset)');
    fields.push(new Field('sample_unique', listType(P, new Uint8()), false));
    fields.push(new Field('sample_index', new List(new Field('item', tokenIdType(classes), false)), false));
    fields.push(new Field('sample_count', new List(new Field('item', new Uint8(), false)), false));
    fields.push(new Field('sample_logprob', new List(new Field('item', new Float16(), false)), false));
  } else {
    const value = storage.dtype === 'float16' ? new Float16() : new Float32();
    if (storage.mode === 'dense') {
      fields.push(new Field('logits', listType(P * classes, value), false));
    } else {
      fields.push(new Field('topk_index', listType(P * storage.k, positions === undefined ? new Uint32() : tokenIdType(classes)), false));
      fields.push(new Field('topk_logit', listType(P * storage.k, value), false));
      fields.push(positions === undefined ? new Field('logsumexp', new Float32(), false) : new Field('logsumexp', listType(P, new Float32()), false));
    }
  }
  if (labelStatistics) {
    fields.push(new Field('pseudo_label', new Int32(), false));
    fields.push(new Field('confidence', new Float32(), false));
    fields.push(new Field('entropy', new Float32(), false));
    fields.push(new Field('margin', new Float32(), false));
  }
  if (views) {
    // Which of the image's K views this row is, and that view's transform (views.ts).
    for (const name of ['view', 'dx', 'dy', 'flip']) fields.push(new Field(name, new Int32(), false));
  }
  // Teacher features: feature_i is the manifest's features[i].
  features.forEach((f, i) => fields.push(new Field(`feature_${i}`, listType(featureSize(f), f.dtype === 'float16' ? new Float16() : new Float32()), false)));
  return new Schema(fields);
}

export function shardFileName(index: number): string {
  return `part-${String(index).padStart(5, '0')}.arrow`;
}
