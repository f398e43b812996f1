/**
 * The token dataset: a dataset file (format `distillate.dataset/1`, as dataset.ts) whose layout is
 * `tokens`. Each row is one block of L token ids (`input`, FixedSizeList<Int32>), cut from one
 * document: blocks of a document overlap by one token (stride L − 1), so every token but the
 * document's first is the next-token target of exactly one position, and the next-token targets
 * come from the block itself (position t predicts token t + 1; nothing stores them twice). The last
 * block of a document is padded with −1; padding positions are masked everywhere.
 *
 * `label` is null throughout (kept for the format's column set); `source` names the document.
 * The metadata carries the tokenizer (name, sha256, vocabulary size) and the UTF-8 bytes of every
 * token id, so bits per byte can be computed without the tokenizer file.
 */
import { Field, Int32, Schema, Utf8 } from 'apache-arrow';
import { z } from 'zod';
import { DATASET_FORMAT, DatasetFormatError, META, readDatasetFileSchema } from '../dataset.js';
import {
  AtomicArrowFileWriter,
  fixedSizeListData,
  idData,
  listColumn,
  listType,
  nullableInt32Data,
  primitiveColumn,
  readArrowBatches,
  readArrowFile,
  readArrowSchema,
  recordBatch,
  sha256File,
  utf8Column,
  utf8Data,
} from '../internal/arrow-io.js';
import { segmentOf } from '../internal/offsets.js';
import { TokenizerRefSchema, type TextTokenizer, type TokenizerRef } from './tokenizer.js';

export const TOKEN_META = {
  tokenizer: 'distillate.tokenizer',
  tokenBytes: 'distillate.token_bytes',
} as const;

/** −1 in a block: a position past the end of its document. */
export const PAD_TOKEN = -1;

export interface TokenDatasetInfo {
  /** Tokens per block (L). */
  readonly block: number;
  readonly tokenizer: TokenizerRef;
  /** UTF-8 bytes per token id ([vocabSize]). */
  readonly tokenBytes: Uint32Array;
}

export interface TokenBatch {
  readonly rows: number;
  readonly ids: Int32Array;
  /** [rows, L] token ids; −1 is padding. */
  readonly tokens: Int32Array;
}

const TokenBytesSchema = z.array(z.number().int().nonnegative());

/** Whether a dataset file's schema is a token dataset (layout `tokens`). */
export function isTokenSchema(schema: Schema): boolean {
  return schema.metadata.get(META.format) === DATASET_FORMAT && schema.metadata.get(META.layout) === 'tokens';
}

export function isTokenDataset(path: string): Promise<boolean> {
  return readArrowSchema(path).then(isTokenSchema, () => false);
}

/**
 * The token dataset's schema; `rowsOnly` leaves out `label` and `source` (the body that hands a
 * row range to a remote worker: http-bodies.ts).
 */
export function tokenSchema(info: TokenDatasetInfo, rowsOnly = false): Schema {
  const fields: Field[] = [new Field('id', new Int32(), false), new Field('input', listType(info.block, new Int32()), false)];
  if (!rowsOnly) fields.push(new Field('label', new Int32(), true), new Field('source', new Utf8(), false));
  return new Schema(
    fields,
    new Map([
      [META.format, DATASET_FORMAT],
      [META.inputShape, JSON.stringify([info.block])],
      [META.layout, 'tokens'],
      [META.scaling, JSON.stringify({ scale: 1, offset: 0 })],
      [META.classes, '[]'],
      [TOKEN_META.tokenizer, JSON.stringify(info.tokenizer)],
      [TOKEN_META.tokenBytes, JSON.stringify(Array.from(info.tokenBytes))],
    ]),
  );
}

export function parseTokenSchema(schema: Schema, file: string): TokenDatasetInfo {
  if (!isTokenSchema(schema)) throw new DatasetFormatError(`${file}: not a token dataset (layout ${JSON.stringify(schema.metadata.get(META.layout) ?? null)})`);
  try {
    const shape = z.tuple([z.number().int().min(2)]).parse(JSON.parse(schema.metadata.get(META.inputShape) ?? 'null'));
    const tokenizer = TokenizerRefSchema.parse(JSON.parse(schema.metadata.get(TOKEN_META.tokenizer) ?? 'null'));
    const tokenBytes = Uint32Array.from(TokenBytesSchema.parse(JSON.parse(schema.metadata.get(TOKEN_META.tokenBytes) ?? 'null')));
    if (tokenBytes.length !== tokenizer.vocabSize) throw new Error(`token_bytes has ${tokenBytes.length} entries for a vocabulary of ${tokenizer.vocabSize}`);
    return { block: shape[0], tokenizer, tokenBytes };
  } catch (err) {
    throw new DatasetFormatError(`${file}: bad token dataset metadata: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Cuts one document's token ids into blocks of L with stride L − 1, the last padded with −1. */
export function cutBlocks(ids: ArrayLike<number>, L: number): Int32Array {
  const n = ids.length;
  if (n < 2) return new Int32Array(0);
  const count = n <= L ? 1 : 1 + Math.ceil((n - L) / (L - 1));
  const out = new Int32Array(count * L).fill(PAD_TOKEN);
  for (let b = 0; b < count; b++) {
    const start = b * (L - 1);
    for (let t = 0; t < L && start + t < n; t++) out[b * L + t] = ids[start + t]!;
  }
  return out;
}

/** Writes a token dataset atomically; blocks arrive in batches. Ids are given by the caller. */
export class TokenDatasetWriter {
  readonly info: TokenDatasetInfo;
  readonly #schema: Schema;
  readonly #file: AtomicArrowFileWriter;
  #tokens = 0;

  private constructor(path: string, info: TokenDatasetInfo) {
    this.info = info;
    this.#schema = tokenSchema(info);
    this.#file = new AtomicArrowFileWriter(path);
  }

  static create(path: string, tokenizer: Pick<TextTokenizer, 'ref' | 'tokenBytes'>, block: number): TokenDatasetWriter {
    if (!(Number.isInteger(block) && block >= 2)) throw new RangeError(`block length ${block}: needs an integer ≥ 2`);
    return new TokenDatasetWriter(path, { block, tokenizer: tokenizer.ref, tokenBytes: tokenizer.tokenBytes });
  }

  /** Non-padding tokens written so far. */
  get tokens(): number {
    return this.#tokens;
  }

  async append(batch: { ids: Int32Array; tokens: Int32Array; sources: readonly string[] }): Promise<void> {
    const rows = batch.ids.length;
    const L = this.info.block;
    if (batch.tokens.length !== rows * L) throw new RangeError(`tokens hold ${batch.tokens.length} values; ${rows} blocks × ${L} needs ${rows * L}`);
    if (batch.sources.length !== rows) throw new RangeError(`give ${rows} sources, one per block`);
    const V = this.info.tokenizer.vocabSize;
    for (let i = 0; i < batch.tokens.length; i++) {
      const t = batch.tokens[i]!;
      if (t === PAD_TOKEN) continue;
      if (!(t >= 0 && t < V)) throw new RangeError(`block ${Math.floor(i / L)}: token id ${t} is outside the vocabulary [0, ${V})`);
      this.#tokens++;
    }
    // The Arrow writer holds the columns until they reach the file, and callers refill their
    // buffers as soon as this returns: write copies.
    await this.#file.write(
      recordBatch(this.#schema, [
        idData(batch.ids.slice()),
        fixedSizeListData(L, new Int32(), batch.tokens.slice()),
        nullableInt32Data(new Int32Array(rows).fill(-1)),
        utf8Data(batch.sources),
      ]),
    );
  }

  async close(): Promise<{ path: string; fingerprint: string; rows: number; bytes: number; tokens: number }> {
    const rows = this.#file.rows;
    const written = await this.#file.close();
    return { path: written.path, fingerprint: written.sha256, rows, bytes: written.bytes, tokens: this.#tokens };
  }

  abort(): Promise<void> {
    return this.#file.abort();
  }
}

/** Reads a token dataset batch by batch (zero-copy typed-array views). */
export class TokenDatasetReader {
  readonly path: string;
  readonly info: TokenDatasetInfo;
  #fingerprint: string | undefined;
  #offsets: readonly number[] | undefined;

  private constructor(path: string, info: TokenDatasetInfo) {
    this.path = path;
    this.info = info;
  }

  static async open(path: string): Promise<TokenDatasetReader> {
    return new TokenDatasetReader(path, parseTokenSchema(await readDatasetFileSchema(path), path));
  }

  async fingerprint(): Promise<string> {
    this.#fingerprint ??= (await sha256File(this.path)).sha256;
    return this.#fingerprint;
  }

  async *batches(): AsyncGenerator<TokenBatch, void, undefined> {
    for await (const batch of readArrowFile(this.path)) {
      yield {
        rows: batch.numRows,
        ids: primitiveColumn<Int32Array>(batch, 'id', this.path),
        tokens: listColumn<Int32Array>(batch, 'input', this.path).values,
      };
    }
  }

  async *sources(): AsyncGenerator<string[], void, undefined> {
    for await (const batch of readArrowFile(this.path)) yield utf8Column(batch, 'source', this.path);
  }

  /** Blocks [start, start + count) in one batch (copied out of the file's record batches). */
  async readRows(start: number, count: number): Promise<TokenBatch> {
    const offsets = await this.#batchOffsets();
    const total = offsets.at(-1)!;
    if (!(Number.isInteger(start) && Number.isInteger(count) && start >= 0 && count >= 0 && start + count <= total)) {
      throw new RangeError(`${this.path}: rows [${start}, ${start + count}) are outside the dataset's ${total} rows`);
    }
    const L = this.info.block;
    const ids = new Int32Array(count);
    const tokens = new Int32Array(count * L);
    if (count === 0) return { rows: 0, ids, tokens };
    const first = segmentOf(offsets, start, this.path);
    const { batches } = await readArrowBatches(this.path, first, segmentOf(offsets, start + count - 1, this.path));
    let pos = offsets[first]!;
    let filled = 0;
    for (const rb of batches) {
      const s = Math.max(start - pos, 0);
      const e = Math.min(start + count - pos, rb.numRows);
      if (e > s) {
        ids.set(primitiveColumn<Int32Array>(rb, 'id', this.path).subarray(s, e), filled);
        tokens.set(listColumn<Int32Array>(rb, 'input', this.path).values.subarray(s * L, e * L), filled * L);
        filled += e - s;
      }
      pos += rb.numRows;
    }
    return { rows: count, ids, tokens };
  }

  async countRows(): Promise<number> {
    return (await this.#batchOffsets()).at(-1)!;
  }

  /** First row of each record batch, then the row count (read once). */
  async #batchOffsets(): Promise<readonly number[]> {
    if (this.#offsets === undefined) {
      const offsets = [0];
      for await (const b of readArrowFile(this.path)) offsets.push(offsets.at(-1)! + b.numRows);
      this.#offsets = offsets;
    }
    return this.#offsets;
  }
}
