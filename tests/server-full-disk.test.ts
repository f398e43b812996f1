/**
 * A full disk fails the job, not the server: a precompute job into a 1.5 MB tmpfs (mounted for
 * real; CI runs as root) ends `failed` with a one-line error naming the file and ENOSPC, the
 * server keeps answering, no temp file is left behind, and once there is room the same job runs
 * to a cache that verifies.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyCache, writeSyntheticDataset } from '@distillate/shared';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { convTeacher } from './helpers/teachers.js';
import { runTs } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';

const root = await mkdtemp(join(tmpdir(), 'distillate-full-'));
const cache = join(root, 'cache');
let mounted = false;
try {
  await mkdir(cache);
  if (process.getuid?.() === 0) {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1500k', 'tmpfs', cache], { stdio: 'ignore' });
    mounted = true;
  }
} catch {
  mounted = false;
}
if (!mounted && process.env['CI'] === 'true') throw new Error('CI runs as root and must be able to mount a tmpfs for the full-disk test');

afterAll(() => {
  if (mounted) execFileSync('umount', [cache]);
});

async function tempFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile() && e.name.includes('.tmp-')) out.push(join(e.parentPath, e.name));
  return out;
}

describe.runIf(mounted)('a full disk', () => {
  beforeAll(async () => {
    await mkdir(join(root, 'models'));
    await mkdir(join(root, 'data'));
    await writeFile(join(root, 'models', 'conv.onnx'), convTeacher());
    // 60,000 rows × 10 classes × 4 bytes: 2.4 MB of logits for a 1.5 MB disk.
    await writeSyntheticDataset(join(root, 'data', 'big.arrow'), { rows: 60_000, inputShape: [8, 8, 1], classes: 10, batchRows: 10_000 });
  });

  it('fails the job with one line naming the file, keeps the server up, leaves no temp files, and resumes once there is room', async () => {
    let server: RunningServer | undefined;
    try {
      server = await startServer(resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache, port: 0, logLevel: 'silent' }, {}));
      const submit = async () =>
        (await (
          await fetch(`${server!.url}/v1/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'precompute', teacher: 'conv', dataset: 'big.arrow' }),
          })
        ).json()) as { id: string };
      const job = async (id: string) =>
        (await (await fetch(`${server!.url}/v1/jobs/${id}`)).json()) as { state: string; cacheKey?: string; error?: { code: string; message: string } };
      const first = await submit();
      const failed = await waitFor('the job to fail', async () => {
        const j = await job(first.id);
        return j.state === 'failed' ? j : j.state === 'succeeded' ? Promise.reject(new Error('the job succeeded on a full disk')) : undefined;
      });
      expect(failed.error!.code, failed.error!.message).toBe('no_space');
      expect(failed.error!.message).toMatch(new RegExp(`^${cache}/.*: ENOSPC: no space left on device`));
      expect(failed.error!.message.split('\n')).toHaveLength(1);
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect(await tempFiles(cache)).toEqual([]);

      execFileSync('mount', ['-o', 'remount,size=20m', cache]);
      const again = await submit();
      const done = await waitFor('the job to finish', async () => {
        const j = await job(again.id);
        return j.state === 'succeeded' ? j : j.state === 'failed' ? Promise.reject(new Error(`failed again: ${j.error?.message}`)) : undefined;
      });
      expect((await verifyCache(join(cache, done.cacheKey!))).ok).toBe(true);
    } finally {
      await server?.close();
    }
  }, 120_000);

  it('distillate-server precompute on a full disk: exit 1, one line naming the file', async () => {
    const small = join(root, 'cli-cache');
    await mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1500k', 'tmpfs', small]);
    try {
      const r = runTs('server/src/bin.ts', [
        'precompute',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        small,
        '--teacher',
        'conv',
        '--dataset',
        'big.arrow',
      ]);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^distillate-server: .*${small}/.*: ENOSPC: no space left on device`))]);
      expect(await tempFiles(small)).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
  }, 120_000);
});
