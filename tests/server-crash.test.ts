/**
 * kill -9 the server in the middle of a precompute job, start it again: the job resumes from
 * its durable shards (they are not rewritten), finishes, and the cache verifies.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LogitCacheReader, verifyCache, writeSyntheticDataset } from '@distillate/shared';
import { waitFor } from './helpers/wait.js';
import { writeTeachers } from './helpers/teachers.js';

const repo = join(import.meta.dirname, '..');
const children: ChildProcess[] = [];

function startServer(root: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    [
      '--conditions=source',
      '--import',
      'tsx',
      join(repo, 'server/src/bin.ts'),
      'serve',
      '--models',
      join(root, 'models'),
      '--data',
      join(root, 'data'),
      '--cache',
      join(root, 'cache'),
      '--port',
      '0',
      '--shard-rows',
      '512',
    ],
    { cwd: repo, env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, child });
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
}

async function getJob(url: string, id: string): Promise<any> {
  return (await fetch(`${url}/v1/jobs/${id}`)).json();
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

describe('crash safety', () => {
  it('resumes a precompute job after kill -9 without rewriting durable shards', async () => {
    const root = await mkdtemp(join(tmpdir(), 'distillate-crash-'));
    for (const d of ['models', 'data', 'cache']) await mkdir(join(root, d));
    await writeTeachers(join(root, 'models'));
    const rows = 12000;
    await writeSyntheticDataset(join(root, 'data', 'train.arrow'), { rows, inputShape: [8, 8, 1], classes: 10 });

    const first = await startServer(root);
    const created = (await (
      await fetch(`${first.url}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'precompute', teacher: 'conv', dataset: 'train.arrow', batchSize: 4 }),
      })
    ).json()) as any;
    let job: any = await waitFor('3,000 rows done', async () => {
      const j = await getJob(first.url, created.id);
      if (j.state === 'failed') throw new Error(`the job failed: ${j.error?.message}`);
      return j.progress.done >= 3000 ? j : undefined;
    });
    const cacheDir = join(root, 'cache', job.cacheKey);
    // Wait until at least two shards are durable (listed in progress.json), then kill -9.
    await waitFor('two durable shards', async () => {
      const files = await readdir(cacheDir);
      return files.includes('progress.json') && files.includes('part-00001.arrow') ? true : undefined;
    });
    const before = await stat(join(cacheDir, 'part-00000.arrow'));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    expect(await readdir(cacheDir)).not.toContain('manifest.json');
    expect((await verifyCache(cacheDir)).ok).toBe(false);

    const second = await startServer(root);
    job = await waitFor(
      'the resumed job to end',
      async () => {
        const j = await getJob(second.url, created.id);
        return j.state === 'succeeded' || j.state === 'failed' ? j : undefined;
      },
      60_000,
      50,
    );
    expect(job.state).toBe('succeeded');
    expect(job.progress).toEqual({ done: rows, total: rows });
    const after = await stat(join(cacheDir, 'part-00000.arrow'));
    expect(after.ino).toBe(before.ino); // the durable shard was kept, not rewritten
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(await verifyCache(cacheDir)).toMatchObject({ ok: true, rows });
    const reader = await LogitCacheReader.open(cacheDir);
    let seen = 0;
    for await (const b of reader) {
      for (let r = 0; r < b.rows; r++) expect(b.ids[r]).toBe(seen + r);
      seen += b.rows;
    }
    expect(seen).toBe(rows);
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  });
});
