/**
 * Dynamic batching for online requests: concurrent callers' rows are concatenated into one
 * inference of at most `maxBatch` rows, started when that many rows wait or `maxWaitMs` after
 * the first one arrived. The queue is bounded in rows; past it, callers get a 429.
 */
import { AppError } from './errors.js';

interface Pending {
  readonly input: Float32Array;
  readonly rows: number;
  readonly resolve: (logits: Float32Array) => void;
  readonly reject: (err: unknown) => void;
}

export interface BatcherOptions {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  readonly maxQueueRows: number;
  /** Floats per sample and classes per row, to split results. */
  readonly sampleSize: number;
  readonly classes: number;
  readonly run: (input: Float32Array, rows: number) => Promise<Float32Array>;
  readonly onBatch?: (rows: number, seconds: number) => void;
}

export class DynamicBatcher {
  readonly #o: BatcherOptions;
  readonly #queue: Pending[] = [];
  #queuedRows = 0;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(options: BatcherOptions) {
    this.#o = options;
  }

  get queuedRows(): number {
    return this.#queuedRows;
  }

  submit(input: Float32Array, rows: number): Promise<Float32Array> {
    if (rows > this.#o.maxQueueRows) {
      return Promise.reject(new AppError(413, 'batch_too_large', `${rows} rows exceed the queue capacity of ${this.#o.maxQueueRows}; split the request`));
    }
    if (this.#queuedRows + rows > this.#o.maxQueueRows) {
      return Promise.reject(
        new AppError(429, 'queue_full', `inference queue is full (${this.#queuedRows} rows waiting); retry shortly`, { 'Retry-After': '1' }),
      );
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ input, rows, resolve, reject });
      this.#queuedRows += rows;
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#running || this.#queue.length === 0) return;
    if (this.#queuedRows >= this.#o.maxBatch) {
      this.#clearTimer();
      void this.#runBatch();
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        void this.#runBatch();
      }, this.#o.maxWaitMs);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #runBatch(): Promise<void> {
    if (this.#running || this.#queue.length === 0) return;
    this.#running = true;
    // Take whole requests up to maxBatch rows (a single larger request runs alone).
    const taken: Pending[] = [];
    let rows = 0;
    while (this.#queue.length > 0 && (taken.length === 0 || rows + this.#queue[0]!.rows <= this.#o.maxBatch)) {
      const p = this.#queue.shift()!;
      taken.push(p);
      rows += p.rows;
    }
    this.#queuedRows -= rows;
    const S = this.#o.sampleSize;
    const C = this.#o.classes;
    const input = taken.length === 1 ? taken[0]!.input : new Float32Array(rows * S);
    if (taken.length > 1) {
      let off = 0;
      for (const p of taken) {
        input.set(p.input, off * S);
        off += p.rows;
      }
    }
    const t0 = performance.now();
    try {
      const logits = await this.#o.run(input, rows);
      this.#o.onBatch?.(rows, (performance.now() - t0) / 1000);
      let off = 0;
      for (const p of taken) {
        p.resolve(logits.slice(off * C, (off + p.rows) * C));
        off += p.rows;
      }
    } catch (err) {
      for (const p of taken) p.reject(err);
    } finally {
      this.#running = false;
      this.#schedule();
    }
  }
}
