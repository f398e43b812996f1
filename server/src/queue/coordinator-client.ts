/**
 * A worker's HTTP calls to the coordinator: the teacher file, dataset rows, shard uploads and
 * heartbeats, each with the bearer token. Every call but the heartbeat rides out a coordinator
 * restart: connection failures and 5xx answers are retried with backoff for `retryMs` (two
 * minutes) before the task's attempt fails.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { decodeDatasetRows, decodeTokenRows, type DatasetBatch, type DatasetInfo, type TokenBatch, type TokenDatasetInfo } from '@distillate/shared';

export const ARROW_FILE = 'application/vnd.apache.arrow.file';

/** The coordinator answered with an error. `retryable`: try again later (it is restarting or busy). */
export class CoordinatorError extends Error {
  override readonly name = 'CoordinatorError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  get retryable(): boolean {
    return this.status === 0 || this.status >= 500;
  }
}

export interface ClientOptions {
  readonly server: string;
  readonly token?: string | undefined;
  /** How long uploads keep retrying while the coordinator is unreachable (default 120 s). */
  readonly retryMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class CoordinatorClient {
  readonly #o: ClientOptions;
  readonly #base: string;

  constructor(o: ClientOptions) {
    this.#o = o;
    this.#base = o.server.replace(/\/+$/, '');
  }

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.#o.token === undefined || this.#o.token === '' ? {} : { authorization: `Bearer ${this.#o.token}` }), ...extra };
  }

  /**
   * One request. `timeoutMs` bounds the exchange (a hung coordinator never hangs a task); with
   * `retry`, an unreachable or restarting coordinator (no answer, 5xx) is retried with backoff
   * for `retryMs` before the error is thrown.
   */
  async #fetch(path: string, init: RequestInit = {}, timeoutMs = 60_000, retry = true): Promise<Response> {
    const deadline = Date.now() + (this.#o.retryMs ?? 120_000);
    for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
      try {
        return await this.#once(path, init, timeoutMs);
      } catch (err) {
        if (!retry || !(err instanceof CoordinatorError && err.retryable) || Date.now() + wait > deadline) throw err;
        await sleep(wait);
      }
    }
  }

  async #once(path: string, init: RequestInit, timeoutMs: number): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.#base}${path}`, {
        ...init,
        signal: AbortSignal.timeout(timeoutMs),
        headers: this.#headers(init.headers as Record<string, string> | undefined),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CoordinatorError(0, 'unreachable', `cannot reach the coordinator at ${this.#base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (res.ok) return res;
    const body = (await res.json().catch(() => undefined)) as { error?: { code?: string; message?: string } } | undefined;
    throw new CoordinatorError(
      res.status,
      body?.error?.code ?? 'http_error',
      `${path}: ${res.status} ${body?.error?.code ?? ''}: ${body?.error?.message ?? res.statusText}`,
    );
  }

  /** Download a teacher's ONNX file to `path`, checking its sha256 (mandatory) on the way. */
  async fetchTeacher(name: string, sha256: string, path: string): Promise<void> {
    const res = await this.#fetch(`/v1/teachers/${encodeURIComponent(name)}/model`, {}, 30 * 60_000);
    const announced = res.headers.get('x-distillate-sha256');
    if (announced !== sha256)
      throw new CoordinatorError(409, 'teacher_changed', `the coordinator's teacher ${name} has sha256 ${announced ?? 'unknown'}; the task needs ${sha256}`);
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    const hash = createHash('sha256');
    try {
      await pipeline(
        Readable.fromWeb(res.body as WebReadableStream),
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        }),
        createWriteStream(tmp),
      );
      const actual = hash.digest('hex');
      if (actual !== sha256) throw new CoordinatorError(422, 'teacher_hash_mismatch', `teacher ${name} downloaded with sha256 ${actual}; expected ${sha256}`);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Rows [start, start + count) of a dataset on the coordinator, which must have this fingerprint. */
  async fetchRows(path: string, fingerprint: string, start: number, count: number): Promise<{ info: DatasetInfo; batch: DatasetBatch }> {
    const q = new URLSearchParams({ path, start: String(start), count: String(count), fingerprint });
    const res = await this.#fetch(`/v1/datasets/rows?${q.toString()}`);
    return decodeDatasetRows(new Uint8Array(await res.arrayBuffer()));
  }

  /** A token dataset's blocks [start, start + count) (the same route: the server answers with token rows for a token dataset). */
  async fetchTokenRows(path: string, fingerprint: string, start: number, count: number): Promise<{ info: TokenDatasetInfo; batch: TokenBatch }> {
    const q = new URLSearchParams({ path, start: String(start), count: String(count), fingerprint });
    const res = await this.#fetch(`/v1/datasets/rows?${q.toString()}`);
    return decodeTokenRows(new Uint8Array(await res.arrayBuffer()));
  }

  /** Upload a finished shard; 'written' or 'duplicate' (the coordinator already had these bytes). */
  async uploadShard(job: string, index: number, bytes: Uint8Array, sha256: string, worker: string): Promise<'written' | 'duplicate'> {
    const res = await this.#fetch(`/v1/jobs/${encodeURIComponent(job)}/shards/${index}`, {
      method: 'PUT',
      headers: { 'content-type': ARROW_FILE, 'x-distillate-sha256': sha256, 'x-distillate-worker': worker },
      body: bytes,
    });
    return ((await res.json()) as { outcome: 'written' | 'duplicate' }).outcome;
  }

  async heartbeat(body: unknown): Promise<void> {
    await this.#fetch('/v1/workers/heartbeat', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }, 5000, false);
  }
}
