import { Field, Float16, Float32, Int32, Int64, Schema, Uint32 } from 'apache-arrow';
import { listType } from '../internal/arrow-io.js';
import type { Storage } from './manifest.js';

/** Arrow schema of a cache shard; reader and writer both derive from it. */
export function cacheShardSchema(storage: Storage, classes: number, labelStatistics: boolean, idType: 'int32' | 'int64', views = false): Schema {
  const value = storage.dtype === 'float16' ? new Float16() : new Float32();
  const fields: Field[] = [new Field('id', idType === 'int64' ? new Int64() : new Int32(), false)];
  if (storage.mode === 'dense') {
    fields.push(new Field('logits', listType(classes, value), false));
  } else {
    fields.push(new Field('topk_index', listType(storage.k, new Uint32()), false));
    fields.push(new Field('topk_logit', listType(storage.k, value), false));
    fields.push(new Field('logsumexp', new Float32(), false));
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
  return new Schema(fields);
}

export function shardFileName(index: number): string {
  return `part-${String(index).padStart(5, '0')}.arrow`;
}
