/**
 * Peak RSS of a fresh process. Read from /proc/self/status (VmHWM), not getrusage's maxRSS:
 * Linux carries ru_maxrss across fork+exec, so a child of a large parent would report the
 * parent's peak.
 */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/** In the child: print this process's peak RSS in kB as the last stdout line. */
export async function printPeakRssKb(): Promise<void> {
  const status = await readFile('/proc/self/status', 'utf8');
  const kb = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error('/proc/self/status has no VmHWM line');
  console.log(kb);
}

/** In the parent: run `script args` in a fresh node (tsx, source condition) and return its peak RSS in MB. */
export function childPeakRssMb(script: string, args: readonly string[]): number {
  const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', script, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child ${args.join(' ')} failed: ${r.stderr.trim().split('\n').at(-1)}`);
  return Number(r.stdout.trim().split('\n').at(-1)) / 1024;
}

/**
 * Run `node args…` (plain node: a built CLI, as users run it) and return its peak RSS in MB, read
 * at its exit by a preloaded module (report-peak-rss.mjs).
 */
export function commandPeakRssMb(args: readonly string[], cwd?: string): number {
  const preload = new URL('./report-peak-rss.mjs', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--import', preload, ...args], { encoding: 'utf8', cwd });
  const kb = /peak-rss-kb (\d+)\s*$/.exec(r.stderr)?.[1];
  if (r.status !== 0 || kb === undefined) throw new Error(`node ${args.slice(0, 3).join(' ')} … failed: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`);
  return Number(kb) / 1024;
}
