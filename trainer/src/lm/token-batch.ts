/**
 * Token rows for language-model training: a token dataset's blocks, each with its row of a token
 * cache (dense logits, top-k with the logsumexp, or sampled draws), streamed in lockstep and
 * shuffled through a bounded buffer; and one batch's student inputs and loss. Every loss is one
 * of the per-row definitions in ../losses, run per position: the rows of the mean are the
 * positions (a [N, L, 1] mask), so a class loss is its token loss without a second definition.
 * From a top-k cache, `kd` is `topKKd` and reverse KL, JSD and TVD are the registry's methods on
 * the k + 1 buckets (`topKBuckets`).
 */
import { type LogitCacheReader, type TokenDatasetReader, mulberry32, type LogitBatch, type SampledLogitBatch } from '@distillate/shared';
import { LOGITS, type BatchLoss, type StudentBatch } from '../engine/engine.js';
import { crossEntropyAt } from '../losses/cross-entropy.js';
import { distillMethods } from '../losses/registry.js';
import type { Feed } from '../losses/ops.js';
import { sampledKd, sampledTargets } from '../losses/sampled-kd.js';
import { topKBuckets, topKKd, topKTargets } from '../losses/topk-kd.js';
import { TOKEN_INPUT } from './transformer.js';

export type TeacherRow =
  | { readonly kind: 'dense'; readonly z: Float32Array }
  | { readonly kind: 'topk'; readonly indices: Uint32Array; readonly logits: Float32Array; readonly logsumexp: Float32Array }
  | {
      readonly kind: 'sampled';
      readonly unique: Uint8Array;
      readonly indices: Uint16Array | Uint32Array;
      readonly counts: Uint8Array;
      readonly logprobs: Float32Array;
    };

export interface TokenRow {
  readonly id: number;
  /** [L] token ids; −1 is padding. */
  readonly tokens: Int32Array;
  readonly teacher?: TeacherRow;
}

async function* datasetRows(reader: TokenDatasetReader): AsyncGenerator<{ id: number; tokens: Int32Array }> {
  const L = reader.info.block;
  for await (const b of reader.batches()) for (let r = 0; r < b.rows; r++) yield { id: b.ids[r]!, tokens: b.tokens.slice(r * L, (r + 1) * L) };
}

async function* cacheRows(cache: LogitCacheReader): AsyncGenerator<{ id: number; row: TeacherRow }> {
  const m = cache.manifest;
  const P = m.tokens!.positions;
  if (m.storage.mode === 'sampled') {
    for await (const b of cache.sampledBatches() as AsyncGenerator<SampledLogitBatch>) {
      for (let r = 0; r < b.rows; r++) {
        const [s, e] = [b.offsets[r]!, b.offsets[r + 1]!];
        yield {
          id: Number(b.ids[r]!),
          row: {
            kind: 'sampled',
            unique: b.unique.slice(r * P, (r + 1) * P),
            indices: b.indices.slice(s, e),
            counts: b.counts.slice(s, e),
            logprobs: b.logprobs.slice(s, e),
          },
        };
      }
    }
    return;
  }
  // Dense rows are read at T = 1 (the teacher's raw logits); top-k rows at the cache's temperature.
  const reading = m.storage.mode === 'dense' ? cache.batches({ temperature: 1 }) : cache.batches();
  for await (const b of reading as AsyncGenerator<LogitBatch>) {
    for (let r = 0; r < b.rows; r++) {
      const id = Number(b.ids[r]!);
      if (b.kind === 'dense') {
        const n = b.logits.length / b.rows;
        yield { id, row: { kind: 'dense', z: b.logits.slice(r * n, (r + 1) * n) } };
      } else {
        const n = b.k * P;
        yield {
          id,
          row: {
            kind: 'topk',
            indices: b.indices.slice(r * n, (r + 1) * n),
            logits: b.logits.slice(r * n, (r + 1) * n),
            logsumexp: b.logsumexp.slice(r * P, (r + 1) * P),
          },
        };
      }
    }
  }
}

/** The dataset's blocks with their cache rows (when a cache is given), in file order; ids must line up. */
export async function* tokenRows(reader: TokenDatasetReader, cache?: LogitCacheReader): AsyncGenerator<TokenRow> {
  const teacher = cache === undefined ? undefined : cacheRows(cache);
  try {
    for await (const d of datasetRows(reader)) {
      if (teacher === undefined) {
        yield d;
        continue;
      }
      const t = await teacher.next();
      if (t.done === true) throw new Error(`cache ${cache!.dir} ends before ${reader.path} (at block id ${d.id})`);
      if (t.value.id !== d.id) throw new Error(`cache ${cache!.dir} row id ${t.value.id} does not line up with ${reader.path}'s block id ${d.id}`);
      yield { ...d, teacher: t.value.row };
    }
  } finally {
    await teacher?.return(undefined);
  }
}

/** Rows through a shuffle buffer of `size` (seeded): bounded memory, a fresh order per epoch. */
export async function* shuffled<T>(rows: AsyncIterable<T>, size: number, seed: number): AsyncGenerator<T> {
  const rand = mulberry32(seed);
  const buf: T[] = [];
  for await (const r of rows) {
    if (buf.length < size) {
      buf.push(r);
      continue;
    }
    const i = Math.floor(rand() * size);
    const out = buf[i]!;
    buf[i] = r;
    yield out;
  }
  for (let i = buf.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [buf[i], buf[j]] = [buf[j]!, buf[i]!];
  }
  yield* buf;
}

export interface TokenLossSpec {
  /** `scratch` (next-token cross-entropy only) or a distillation method. */
  readonly method: 'scratch' | keyof typeof distillMethods;
  readonly params: { readonly temperature: number } & Record<string, unknown>;
  readonly weights: { readonly ce: number; readonly kd: number };
  /** The cache's storage: which teacher targets a batch carries. */
  readonly teacher?: 'dense' | 'topk' | 'sampled';
  readonly sampledN?: number;
  readonly L: number;
  readonly V: number;
}

/** The student inputs and the loss of one batch of token rows. */
export function tokenBatch(rows: readonly TokenRow[], spec: TokenLossSpec): { batch: StudentBatch; loss: BatchLoss } {
  const { L, V } = spec;
  const N = rows.length;
  const ids = new Int32Array(N * L);
  // The next token of each position (0 where there is none: ce_mask drops it).
  const next = new Float32Array(N * L);
  const ceMask = new Float32Array(N * L);
  const kdMask = new Float32Array(N * L);
  let ceCount = 0;
  let kdCount = 0;
  rows.forEach((row, r) => {
    for (let t = 0; t < L; t++) {
      const tok = row.tokens[t]!;
      const pos = r * L + t;
      ids[pos] = tok < 0 ? 0 : tok;
      if (tok < 0) continue;
      kdMask[pos] = 1;
      kdCount++;
      const following = t + 1 < L ? row.tokens[t + 1]! : -1;
      if (following >= 0) {
        next[pos] = following;
        ceMask[pos] = 1;
        ceCount++;
      }
    }
  });
  // The cross-entropy reads log q at the next token ([N, L, 1]); a method given the one-hot
  // target (dense caches, top-k buckets) gets it made in the graph from the same ids as [N, L].
  const feeds: Record<string, Feed> = {
    next: { data: next, dims: [N, L, 1] },
    ce_mask: { data: ceMask, dims: [N, L, 1] },
    ce_norm: { data: Float32Array.of(1 / Math.max(1, ceCount)), dims: [1] },
  };
  const inputs: Record<string, readonly (number | 'N')[]> = { next: ['N', L, 1], ce_mask: ['N', L, 1], ce_norm: [1] };
  const useTeacher = spec.method !== 'scratch' && spec.teacher !== undefined;
  const needsTarget = useTeacher && (spec.teacher === 'dense' || (spec.teacher === 'topk' && spec.method !== 'kd'));
  if (needsTarget) {
    feeds['next_ids'] = { data: next, dims: [N, L] };
    inputs['next_ids'] = ['N', L];
  }
  if (useTeacher) {
    feeds['kd_mask'] = { data: kdMask, dims: [N, L, 1] };
    feeds['kd_norm'] = { data: Float32Array.of(1 / Math.max(1, kdCount)), dims: [1] };
    inputs['kd_mask'] = ['N', L, 1];
    inputs['kd_norm'] = [1];
    if (spec.teacher === 'dense') {
      const z = new Float32Array(N * L * V);
      rows.forEach((row, r) => z.set((row.teacher as Extract<TeacherRow, { kind: 'dense' }>).z, r * L * V));
      feeds['teacher'] = { data: z, dims: [N, L, V] };
      inputs['teacher'] = ['N', L, V];
    } else if (spec.teacher === 'topk') {
      const first = rows[0]!.teacher as Extract<TeacherRow, { kind: 'topk' }>;
      const k = first.indices.length / L;
      const cat = (
        pick: (t: Extract<TeacherRow, { kind: 'topk' }>) => ArrayLike<number>,
        size: number,
        Kind: Float32ArrayConstructor | Uint32ArrayConstructor,
      ) => {
        const out = new Kind(N * size);
        rows.forEach((row, r) => out.set(pick(row.teacher as Extract<TeacherRow, { kind: 'topk' }>), r * size));
        return out;
      };
      const t = topKTargets(
        {
          indices: cat((x) => x.indices, L * k, Uint32Array),
          logits: cat((x) => x.logits, L * k, Float32Array),
          logsumexp: cat((x) => x.logsumexp, L, Float32Array),
        },
        N * L,
        k,
        V,
        kdMask,
        spec.method !== 'kd', // another divergence reads the k + 1 buckets
      );
      for (const [name, f] of Object.entries(t) as [string, Feed][]) {
        const last = f.dims.at(-1)!;
        feeds[`tk_${name}`] = { data: f.data, dims: [N, L, last] };
        inputs[`tk_${name}`] = ['N', L, last];
      }
    } else {
      // Sparse: S = n slots per position (its distinct ids and their count / n), never [N, L, V].
      const S = spec.sampledN!;
      const ids = new Float32Array(N * L * S);
      const weights = new Float32Array(N * L * S);
      const entropy = new Float32Array(N * L);
      rows.forEach((row, r) => {
        const s = row.teacher as Extract<TeacherRow, { kind: 'sampled' }>;
        sampledTargets(s, 0, L, S, { ids, weights, entropy, rowOffset: r * L }, kdMask.subarray(r * L, (r + 1) * L));
      });
      feeds['s_ids'] = { data: ids, dims: [N, L, S] };
      feeds['s_w'] = { data: weights, dims: [N, L, S] };
      feeds['s_h'] = { data: entropy, dims: [N, L, 1] };
      inputs['s_ids'] = ['N', L, S];
      inputs['s_w'] = ['N', L, S];
      inputs['s_h'] = ['N', L, 1];
    }
  }
  const T = spec.params.temperature;
  const loss: BatchLoss = {
    key: `lm:${spec.method}:${useTeacher ? spec.teacher : 'none'}:${T}:${spec.weights.ce}:${spec.weights.kd}:${JSON.stringify(spec.params)}`,
    inputs,
    outputs: [LOGITS],
    feeds: () => feeds,
    compute(o, out, x) {
      const s = out[LOGITS]!;
      const ce = crossEntropyAt(o, s, x['next']!, { mask: x['ce_mask']!, norm: x['ce_norm']! });
      const target = () => o.oneHot(x['next_ids']!, V);
      if (!useTeacher) return { total: ce, terms: { ce, total: ce } };
      const rowsK = { mask: x['kd_mask']!, norm: x['kd_norm']! };
      let kd: (typeof out)[string];
      if (spec.teacher === 'dense') {
        const m = distillMethods[spec.method as keyof typeof distillMethods];
        kd = m.loss(o, { student: s, teacher: x['teacher']!, target: target(), classes: V, rows: rowsK }, spec.params as never);
      } else if (spec.teacher === 'topk') {
        const t = {
          p: x['tk_p']!,
          kept: x['tk_kept']!,
          tail: x['tk_tail']!,
          entropy: x['tk_entropy']!,
          ...(x['tk_logBuckets'] === undefined ? {} : { logBuckets: x['tk_logBuckets'] }),
        };
        if (spec.method === 'kd') kd = topKKd(o, s, t, rowsK, T);
        else {
          const b = topKBuckets(o, s, t, T);
          const m = distillMethods[spec.method as keyof typeof distillMethods];
          kd = m.loss(o, { student: b.student, teacher: b.teacher, target: target(), classes: V + 1, rows: rowsK }, spec.params as never);
        }
      } else {
        kd = sampledKd(o, s, { ids: x['s_ids']!, weights: x['s_w']!, entropy: x['s_h']! }, rowsK, T);
      }
      const total = o.add(o.mul(ce, o.scalar(spec.weights.ce)), o.mul(kd, o.scalar(spec.weights.kd)));
      return { total, terms: { ce, kd, total } };
    },
  };
  return { batch: { rows: N, inputs: { [TOKEN_INPUT]: { data: ids, dims: [N, L] } } }, loss };
}
