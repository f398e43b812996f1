/**
 * sharp's image decoding (image-decode.ts says which files are sharp's) in child processes, one
 * per core. sharp calls in one process do not scale
 * across cores on small images: with two in flight, or two worker threads, an import of 56×56
 * JPEGs ran at the speed of one (libvips' per-call set-up contends on GLib locks; BENCHMARKS.md,
 * "Importing images"); separate processes share no locks. A decoding process that dies (a
 * decoder crash on a hostile file) fails only the files it held, which the import reports as
 * skipped with that reason, and a fresh process takes its place.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ImageRefused, type Decoded, type DecodeOptions } from './image-decode.js';

/**
 * Parent → decoding process: decode the file at `path`, its bytes in base64 (names need not be
 * UTF-8). Messages are JSON: with Node's `advanced` serialization (binary buffers) the importing
 * process's peak RSS grew 1.15–1.20× from 1,000 to 14,000 images, with JSON and base64 1.02–1.04×
 * at the same speed (scratch runs, BENCHMARKS.md).
 */
export interface DecodeRequest {
  readonly id: number;
  readonly path: string;
  readonly options: DecodeOptions;
}

/** Decoding process → parent: the pixels (base64), or why the file cannot be imported. */
export type DecodeReply =
  { readonly id: number; readonly pixels: string; readonly width: number; readonly height: number } | { readonly id: number; readonly error: string };

interface Pending {
  readonly request: DecodeRequest;
  readonly resolve: (d: Decoded) => void;
  readonly reject: (err: Error) => void;
}

interface Worker {
  readonly child: ChildProcess;
  readonly pending: Map<number, Pending>;
}

/**
 * The decoding process's module and how to start it: the compiled `.js` beside this file, or,
 * when running from source (tests, `tsx`), the `.ts` under tsx with the source condition.
 */
function workerModule(): { path: string; execArgv: string[] } {
  const js = fileURLToPath(new URL('./decode-worker.js', import.meta.url));
  if (existsSync(js)) return { path: js, execArgv: [] };
  return { path: fileURLToPath(new URL('./decode-worker.ts', import.meta.url)), execArgv: ['--import', 'tsx', '--conditions=source'] };
}

export class DecodePool {
  readonly #workers: Worker[] = [];
  readonly #module = workerModule();
  #next = 0;
  #closed = false;

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) this.#workers.push(this.#spawn());
  }

  #spawn(): Worker {
    const child = fork(this.#module.path, [], { execArgv: this.#module.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const worker: Worker = { child, pending: new Map() };
    child.on('message', (reply: DecodeReply) => {
      const p = worker.pending.get(reply.id);
      if (p === undefined) return;
      worker.pending.delete(reply.id);
      if ('error' in reply) p.reject(new ImageRefused(reply.error));
      else p.resolve({ pixels: Buffer.from(reply.pixels, 'base64'), width: reply.width, height: reply.height });
    });
    child.on('exit', (code, signal) => {
      // It decodes in the order sent: the first file still pending is the one it died on; the
      // rest go to the process that takes its place (or fail, when the pool is closing).
      const [held, ...queued] = worker.pending.values();
      worker.pending.clear();
      held?.reject(new ImageRefused(`the decoding process died on this file (${signal ?? `exit code ${code}`})`));
      const at = this.#workers.indexOf(worker);
      if (this.#closed || at < 0) {
        for (const p of queued) p.reject(new Error('internal: the decode pool closed with files pending'));
        return;
      }
      this.#workers[at] = this.#spawn();
      for (const p of queued) this.#send(this.#workers[at]!, p);
    });
    return worker;
  }

  #send(worker: Worker, p: Pending): void {
    worker.pending.set(p.request.id, p);
    worker.child.send(p.request, (err) => {
      if (err === null || !worker.pending.has(p.request.id)) return;
      worker.pending.delete(p.request.id);
      p.reject(err);
    });
  }

  /** Decode one file in the least busy process; rejects with the reason the file cannot be imported. */
  decode(path: Buffer, options: DecodeOptions): Promise<Decoded> {
    if (this.#closed) return Promise.reject(new Error('internal: the decode pool is closed'));
    const worker = this.#workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const request: DecodeRequest = { id: this.#next++, path: path.toString('base64'), options };
    return new Promise<Decoded>((resolve, reject) => this.#send(worker, { request, resolve, reject }));
  }

  /** End every decoding process and wait for it to exit. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(
      this.#workers.map(
        ({ child }) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            if (child.connected) child.disconnect();
            else child.kill();
          }),
      ),
    );
  }
}
