/** The one-writer lock of a cache directory: a `.lock` file holding the writer's pid. */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const LOCK_FILE = '.lock';

export class CacheLockedError extends Error {
  override readonly name = 'CacheLockedError';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
      // A lock left by a crashed process (kill -9) is stale; take it over.
      if (Number.isInteger(holder) && holder !== process.pid && pidAlive(holder)) {
        throw new CacheLockedError(`${dir} is being written by process ${holder}`);
      }
      await rm(path, { force: true });
    }
  }
  throw new CacheLockedError(`could not lock ${dir}`);
}

