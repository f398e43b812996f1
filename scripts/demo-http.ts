/**
 * The demos' HTTP side (scripts/demo.ts, scripts/demo-lm.ts): one API call, and a precompute
 * job submitted over HTTP and followed through its server-sent events with a progress bar. Its
 * own module so that demo-lm.ts, imported by demo.ts on `--lm`, does not import demo.ts back.
 */
import { Presets, SingleBar } from 'cli-progress';
import type { RunningServer } from '@distillate/server';

export interface JobView {
  id: string;
  state: string;
  progress: { done: number; total: number };
  cacheKey?: string;
  error?: { code: string; message: string };
}

export async function api<T>(server: RunningServer, path: string, init?: RequestInit): Promise<T> {
  const res = await fetch(`${server.url}${path}`, init);
  const body = (await res.json()) as T & { error?: { code: string; message: string } };
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${path}: HTTP ${res.status} ${body.error?.code ?? ''}: ${body.error?.message ?? ''}`);
  return body;
}

/** Submit a precompute job over HTTP and follow its server-sent events with a progress bar. */
export async function precompute(
  server: RunningServer,
  teacher: string,
  dataset: string,
  log: (line: string) => void,
  storage?: Record<string, unknown>,
): Promise<JobView> {
  const created = await api<{ id: string }>(server, '/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'precompute', teacher, dataset, temperature: 1, ...(storage === undefined ? {} : { storage }) }),
  });
  const bar = new SingleBar(
    { format: `precompute ${dataset} [{bar}] {percentage}% | {value}/{total} rows | ETA {eta_formatted}`, hideCursor: true, etaBuffer: 50 },
    Presets.shades_classic,
  );
  let started = false;
  let last: JobView | undefined;
  const res = await fetch(`${server.url}/v1/jobs/${created.id}/events`);
  if (!res.ok || res.body === null) throw new Error(`job ${created.id}: events stream answered HTTP ${res.status}`);
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split('\n').find((l) => l.startsWith('data: '));
      if (data === undefined) continue;
      last = JSON.parse(data.slice(6)) as JobView;
      if (!started && last.progress.total > 0) {
        bar.start(last.progress.total, last.progress.done);
        started = true;
      }
      if (started) bar.update(last.progress.done);
    }
  }
  if (started) bar.stop();
  if (last?.state !== 'succeeded') throw new Error(`precompute of ${dataset} ended ${last?.state ?? 'without events'}: ${last?.error?.message ?? ''}`);
  log(`precompute ${dataset}: ${last.progress.total} rows → cache ${last.cacheKey!.slice(0, 16)}…`);
  return last;
}
