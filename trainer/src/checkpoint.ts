/**
 * Checkpoints: after each epoch the engine's weights and optimizer state go to their own
 * directory `checkpoint-<epoch>/`; `checkpoint.json`, written atomically afterwards, names the
 * complete one, and older ones are removed. `--resume` continues from the one it names.
 */
import { appendFile, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '@distillate/shared';
import type { StudentEngine } from './engine/engine.js';
import { TrainingError } from './errors.js';

export interface ResumePoint {
  /** The checkpoint directory to load. */
  readonly dir: string;
  /** The first epoch still to train. */
  readonly startEpoch: number;
}

const CheckpointSchema = z.object({ epoch: z.number().int().min(0), dir: z.string().optional() });

export async function findResumePoint(runDir: string): Promise<ResumePoint> {
  let text: string;
  try {
    text = await readFile(join(runDir, 'checkpoint.json'), 'utf8');
  } catch {
    throw new TrainingError(`--resume: ${runDir} has no checkpoint`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    raw = undefined;
  }
  const parsed = CheckpointSchema.safeParse(raw);
  if (!parsed.success) throw new TrainingError(`--resume: ${join(runDir, 'checkpoint.json')} is not a checkpoint record`);
  const state = parsed.data;
  return { dir: join(runDir, state.dir ?? 'checkpoint'), startEpoch: state.epoch + 1 };
}

/** A fresh run: no metrics or checkpoint of an earlier run with the same name. */
export async function clearRun(runDir: string): Promise<void> {
  await rm(join(runDir, 'metrics.jsonl'), { force: true });
  await rm(join(runDir, 'checkpoint.json'), { force: true });
  await rm(join(runDir, 'self-cache'), { recursive: true, force: true });
}

/** What every run's metrics line has (a classifier's EpochMetrics, a language model's LmEpochMetrics). */
interface Epoch {
  readonly epoch: number;
}

/** The metrics of the epochs before `startEpoch` (metrics.jsonl is rewritten to hold only those). */
export async function keptMetrics<M extends Epoch>(runDir: string, startEpoch: number): Promise<M[]> {
  const old = await readFile(join(runDir, 'metrics.jsonl'), 'utf8').catch(() => '');
  const kept = old
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as M)
    .filter((m) => m.epoch < startEpoch);
  await writeFile(join(runDir, 'metrics.jsonl'), kept.map((m) => `${JSON.stringify(m)}\n`).join(''));
  return kept;
}

/** Record one finished epoch: its metrics line, then its checkpoint, then the pointer to it. */
export async function saveEpoch(runDir: string, engine: Pick<StudentEngine, 'saveCheckpoint'>, m: Epoch): Promise<void> {
  await appendFile(join(runDir, 'metrics.jsonl'), `${JSON.stringify(m)}\n`);
  const checkpoint = `checkpoint-${m.epoch}`;
  await rm(join(runDir, checkpoint), { recursive: true, force: true });
  await engine.saveCheckpoint(join(runDir, checkpoint));
  await writeFileAtomic(join(runDir, 'checkpoint.json'), JSON.stringify({ epoch: m.epoch, dir: checkpoint }));
  for (const old of await readdir(runDir)) {
    if ((old.startsWith('checkpoint-') && old !== checkpoint) || old === 'checkpoint') await rm(join(runDir, old), { recursive: true, force: true });
  }
}
