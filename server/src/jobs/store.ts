/**
 * Job records on disk: `<cache>/.jobs/<id>.json`, written atomically, validated with zod when
 * loaded (a damaged record is logged and skipped, never trusted with a cast).
 */
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { removeStaleTempFiles, writeFileAtomic } from '@distillate/shared';
import type { Logger } from 'pino';
import { z } from 'zod';
import { JobRequestSchema } from './request.js';

export const JobStateSchema = z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']);
export type JobState = z.infer<typeof JobStateSchema>;

export const JobRecordSchema = z.object({
  id: z.string().min(1),
  request: JobRequestSchema,
  state: JobStateSchema,
  progress: z.object({ done: z.number().int().min(0), total: z.number().int().min(0) }),
  cacheKey: z.string().optional(),
  cacheHit: z.boolean().optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  selection: z.object({ path: z.string(), rows: z.number().int(), perClass: z.array(z.number().int()) }).optional(),
  /** Jobs run as shard tasks on a Redis queue: where, how many tasks, coordinator time (ms). */
  distributed: z.object({ queue: z.string(), tasks: z.number().int(), timing: z.object({ verify: z.number(), write: z.number() }) }).optional(),
  /** A passing condition the job waits on (the queue unreachable). */
  notice: z.string().optional(),
  /** Things that went wrong without failing the job (a conflicting shard upload refused). */
  warnings: z.array(z.string()).optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type JobRecord = z.infer<typeof JobRecordSchema>;

export class JobStore {
  readonly dir: string;
  readonly #logger: Logger;

  constructor(cacheRoot: string, logger: Logger) {
    this.dir = join(cacheRoot, '.jobs');
    this.#logger = logger;
  }

  /** Every readable record, oldest first; temp files of writes that never finished are removed. */
  async load(): Promise<JobRecord[]> {
    await mkdir(this.dir, { recursive: true });
    await removeStaleTempFiles(this.dir);
    const records: JobRecord[] = [];
    for (const f of (await readdir(this.dir)).filter((n) => n.endsWith('.json'))) {
      let raw: unknown;
      try {
        raw = JSON.parse(await readFile(join(this.dir, f), 'utf8'));
      } catch {
        this.#logger.warn({ file: f }, 'ignoring an unreadable job record');
        continue;
      }
      const parsed = JobRecordSchema.safeParse(raw);
      if (!parsed.success) {
        this.#logger.warn({ file: f, issues: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) }, 'ignoring an invalid job record');
        continue;
      }
      records.push(parsed.data);
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async save(job: JobRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(join(this.dir, `${job.id}.json`), JSON.stringify(job, null, 2));
  }
}
