/**
 * The coordinator's view of its workers, from their heartbeats (every 2 s): a worker not heard
 * from for 10 s is no longer listed. Also feeds the per-worker throughput metrics.
 */
import { z } from 'zod';
import type { Metrics } from '../metrics.js';
import { TimingSchema } from './task.js';

export const HEARTBEAT_MS = 2000;
const LIVE_MS = 5 * HEARTBEAT_MS;
/** How long a worker no longer heard from is still listed, as lost. */
const LOST_MS = 10 * 60_000;

export const HeartbeatSchema = z
  .object({
    id: z.string().min(1).max(200),
    host: z.string().max(200),
    pid: z.number().int(),
    executionProvider: z.string().max(40).optional(),
    threads: z.number().int().positive().optional(),
    concurrency: z.number().int().positive(),
    /** Task ids running now. */
    active: z.array(z.string().max(300)).max(1000),
    /** Rows uploaded since the worker started. */
    rows: z.number().int().nonnegative(),
    tasks: z.number().int().nonnegative(),
    /** Rows per second of busy time (reading, teacher, encoding, upload). */
    rowsPerSecond: z.number().nonnegative(),
    /** Where the worker's time went since it started, in ms. */
    timing: TimingSchema,
    startedAt: z.string(),
  })
  .strict();
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

export class WorkerRegistry {
  readonly #workers = new Map<string, Heartbeat & { lastSeen: number }>();
  readonly #metrics: Metrics | undefined;

  constructor(metrics?: Metrics) {
    this.#metrics = metrics;
  }

  heartbeat(hb: Heartbeat): void {
    const before = this.#workers.get(hb.id)?.rows ?? 0;
    this.#workers.set(hb.id, { ...hb, lastSeen: Date.now() });
    this.#metrics?.workerRowsPerSecond.set({ worker: hb.id }, hb.rowsPerSecond);
    if (hb.rows > before) this.#metrics?.workerRows.inc({ worker: hb.id }, hb.rows - before);
    this.#prune();
  }

  /** Workers heard from in the last 10 s, with their last heartbeat. */
  live(): Array<Heartbeat & { lastSeen: string }> {
    return this.#listed(true);
  }

  /** Workers last heard from between 10 s and 10 min ago: lost (their tasks go back to the queue). */
  lost(): Array<Heartbeat & { lastSeen: string }> {
    return this.#listed(false);
  }

  get count(): number {
    return this.live().length;
  }

  #listed(live: boolean): Array<Heartbeat & { lastSeen: string }> {
    this.#prune();
    const now = Date.now();
    return [...this.#workers.values()].filter((w) => now - w.lastSeen <= LIVE_MS === live).map((w) => ({ ...w, lastSeen: new Date(w.lastSeen).toISOString() }));
  }

  #prune(): void {
    const now = Date.now();
    for (const [id, w] of this.#workers) {
      if (now - w.lastSeen > LIVE_MS) this.#metrics?.workerRowsPerSecond.remove({ worker: id });
      if (now - w.lastSeen > LOST_MS) this.#workers.delete(id);
    }
  }
}
