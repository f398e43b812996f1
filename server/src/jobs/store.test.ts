import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { JobStore, type JobRecord } from './store.js';

describe('JobStore', () => {
  it('loads valid records oldest first, skips unreadable or invalid ones, and removes stale temp files', async () => {
    const root = await mkdtemp(join(tmpdir(), 'jobstore-'));
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    const store = new JobStore(root, logger);
    const job = (id: string, createdAt: string): JobRecord => ({
      id,
      request: { type: 'precompute', teacher: 't', dataset: 'd.arrow', temperature: 1, storage: { mode: 'dense', dtype: 'float32' }, batchSize: 256 },
      state: 'running',
      progress: { done: 10, total: 100 },
      createdAt,
      updatedAt: createdAt,
    });
    await store.save(job('b', '2026-01-02T00:00:00Z'));
    await store.save(job('a', '2026-01-01T00:00:00Z'));
    await writeFile(join(store.dir, 'broken.json'), '{ not json');
    await writeFile(join(store.dir, 'bogus.json'), JSON.stringify({ ...job('c', '2026-01-03T00:00:00Z'), state: 'exploded' }));
    await mkdir(store.dir, { recursive: true });
    await writeFile(join(store.dir, 'x.json.tmp-999999999'), 'half a record'); // a writer that died
    const records = await store.load();
    expect(records.map((r) => r.id)).toEqual(['a', 'b']);
    expect(warnings.join('')).toMatch(/ignoring an unreadable job record/);
    expect(warnings.join('')).toMatch(/"file":"bogus.json","issues":\["state: [^"]*.*"msg":"ignoring an invalid job record"/);
    expect(await readdir(store.dir)).not.toContain('x.json.tmp-999999999');
  });
});
