/** The worker registry's clock: live for 10 s after a heartbeat, then lost for 10 min, then gone. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WorkerRegistry } from './workers.js';

const beat = (id: string) => ({
  id,
  host: 'h',
  pid: 1,
  concurrency: 1,
  active: [],
  rows: 0,
  tasks: 0,
  rowsPerSecond: 0,
  timing: { read: 0, teacher: 0, encode: 0, upload: 0 },
  startedAt: new Date(0).toISOString(),
});

afterEach(() => vi.restoreAllMocks());

describe('WorkerRegistry', () => {
  it('lists a worker as live, then lost once it is 10 s silent, and forgets it after 10 min', () => {
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    const r = new WorkerRegistry();
    r.heartbeat(beat('a'));
    r.heartbeat(beat('b'));
    now += 9_000;
    r.heartbeat(beat('b'));
    expect([r.live().map((w) => w.id), r.lost().map((w) => w.id), r.count]).toEqual([['a', 'b'], [], 2]);
    now += 2_000; // a: 11 s silent
    expect([r.live().map((w) => w.id), r.lost().map((w) => w.id), r.count]).toEqual([['b'], ['a'], 1]);
    now = 1_009_000 + 599_000; // b: 599 s silent, lost; a: 608 s, forgotten
    expect([r.live(), r.lost()]).toEqual([[], [{ ...beat('b'), lastSeen: new Date(1_009_000).toISOString() }]]);
    now += 2_000;
    expect([r.live(), r.lost()]).toEqual([[], []]);
  });
});
