/**
 * Self-distillation: at epoch `fromEpoch` the student's snapshot is run over the training set
 * and cached as a teacher (runs/<name>/self-cache/, through the shared cache writer); it is the
 * teacher for every later epoch. A run resumed past `fromEpoch` finds that cache again.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { listCaches, LogitCacheReader, LogitCacheWriter, type DatasetReader } from '@distillate/shared';
import { flatPredict, type StudentEngine } from './engine/engine.js';
import { TrainingError } from './errors.js';

const teacherName = (epoch: number): string => `self@epoch${epoch}`;

/** Run the student over the training set and cache its logits as a teacher. */
export async function snapshotTeacher(
  engine: StudentEngine,
  dataset: DatasetReader,
  classes: readonly string[],
  root: string,
  temperature: number,
  epoch: number,
): Promise<LogitCacheReader> {
  const existing = await findSnapshot(root, epoch);
  if (existing !== undefined) return existing; // the same epoch again after a crash: its snapshot is already complete
  const rows = await dataset.countRows();
  const D = dataset.inputSize;
  const { scale, offset } = dataset.info.scaling;
  const writer = await LogitCacheWriter.open({
    root,
    teacher: {
      name: teacherName(epoch),
      sha256: createHash('sha256')
        .update(`${teacherName(epoch)}:${await dataset.fingerprint()}`)
        .digest('hex'),
      classes: [...classes],
    },
    dataset: { fingerprint: await dataset.fingerprint(), rows },
    preprocessing: JSON.stringify(dataset.info.scaling),
    temperature,
    storage: { mode: 'dense', dtype: 'float32' },
  });
  try {
    for await (const b of dataset) {
      const x = new Float32Array(b.rows * D);
      for (let i = 0; i < x.length; i++) x[i] = b.inputs[i]! * scale + offset;
      const logits = await flatPredict(engine)(x, b.rows);
      await writer.append({ ids: b.ids, logits });
    }
    const m = await writer.finish();
    return LogitCacheReader.open(join(root, m.key));
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** The complete snapshot cache taken at `epoch`, if there is one. */
export async function findSnapshot(root: string, epoch: number): Promise<LogitCacheReader | undefined> {
  const entry = (await listCaches(root)).find((c) => c.manifest.teacher.name === teacherName(epoch));
  return entry === undefined ? undefined : LogitCacheReader.open(entry.dir);
}

/** The teacher of a resumed run past `fromEpoch`: the snapshot it took then. */
export async function resumeSnapshot(root: string, fromEpoch: number): Promise<LogitCacheReader> {
  const cache = await findSnapshot(root, fromEpoch);
  if (cache === undefined)
    throw new TrainingError(`--resume: the self-distillation snapshot of epoch ${fromEpoch} is missing from ${root}; rerun without --resume`);
  return cache;
}
