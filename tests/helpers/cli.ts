/** Run one of the project's CLIs from its TypeScript sources (tsx, the `source` export condition), as a user would. */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { join } from 'node:path';

export const REPO = join(import.meta.dirname, '..', '..');

/** `entry`: a path from the repo root, e.g. 'trainer/src/bin.ts' or 'scripts/import-fashion-mnist.ts'. */
export function runTs(entry: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', join(REPO, entry), ...args], { cwd: REPO, encoding: 'utf8', env });
}
