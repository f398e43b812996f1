/**
 * Open the engine a recipe asks for, fresh or from a checkpoint. Only the TF.js engine chooses a
 * TF.js backend: the ORT engine's whole step, loss included, is its ONNX graph.
 */
import type { PlannedHint } from '../teacher-plan.js';
import type { ExecutionProvider } from '@distillate/shared/onnx';
import { selectBackend, type BackendChoice } from '../backend.js';
import type { Recipe } from '../recipe.js';
import type { StoredInput, StudentEngine } from './engine.js';
import { OrtEngine } from './ort.js';
import { TfjsEngine } from './tfjs.js';

const PROVIDERS = ['cuda', 'webgpu', 'cpu'] as const;

export interface OpenedEngine {
  readonly engine: StudentEngine;
  /** The TF.js backend (TF.js engine only). */
  readonly backend?: BackendChoice;
  /** Providers or backends passed over, and why. */
  readonly skipped: readonly string[];
}

/** The execution provider forced by the recipe or DISTILLATE_EP, if any. */
export function forcedProvider(recipe: Readonly<Recipe>, env: NodeJS.ProcessEnv = process.env): ExecutionProvider | undefined {
  if (recipe.executionProvider !== undefined) return recipe.executionProvider;
  const e = env['DISTILLATE_EP'];
  if (e === undefined || e === '') return undefined;
  if (!(PROVIDERS as readonly string[]).includes(e)) throw new Error(`DISTILLATE_EP=${e}: expected one of ${PROVIDERS.join(', ')}`);
  return e as ExecutionProvider;
}

/** ORT intra-op threads from the recipe or DISTILLATE_THREADS; undefined: the session default (every core). */
export function intraOpThreads(recipe: Readonly<Recipe>, env: NodeJS.ProcessEnv = process.env): number | undefined {
  if (recipe.threads !== undefined) return recipe.threads;
  const e = env['DISTILLATE_THREADS'];
  if (e === undefined || e === '') return undefined;
  const n = Number(e);
  if (!Number.isInteger(n) || n < 1) throw new Error(`DISTILLATE_THREADS=${e}: expected a whole number ≥ 1`);
  return n;
}

export async function openEngine(
  recipe: Readonly<Recipe>,
  inputShape: readonly number[],
  classes: number,
  resumeFrom?: string,
  hints: readonly PlannedHint[] = [],
  /** Offer the engine the datasets' stored uint8 values with this scaling (the ORT engine takes them; see StudentEngine.storedInput). */
  storedInput?: StoredInput,
): Promise<OpenedEngine> {
  const skipped: string[] = [];
  if (recipe.engine === 'tfjs') {
    if (hints.length > 0) throw new Error('distill.hints train on the ORT engine (engine: ort); the TF.js engine reads the logits only');
    const backend = await selectBackend(recipe.backend);
    for (const s of backend.skipped) skipped.push(`TF.js ${s.name}: ${s.reason}`);
    const engine = await TfjsEngine.create(recipe, inputShape, classes, `${backend.name} (${backend.detail})`, resumeFrom);
    return { engine, backend, skipped };
  }
  if (recipe.backend !== undefined)
    throw new Error(`backend: ${recipe.backend} chooses a TF.js backend, which only engine: tfjs uses; the ort engine takes executionProvider`);
  const provider = forcedProvider(recipe);
  const threads = intraOpThreads(recipe);
  const engine = await OrtEngine.create(
    recipe,
    inputShape,
    classes,
    {
      ...(provider === undefined ? {} : { provider }),
      ...(threads === undefined ? {} : { intraOpThreads: threads }),
      ...(storedInput === undefined ? {} : { storedInput }),
      onProviderFailure: (p, reason) => skipped.push(`ORT ${p}: ${reason}`),
    },
    hints,
  );
  try {
    if (resumeFrom !== undefined) await engine.loadCheckpoint(resumeFrom);
  } catch (err) {
    await engine.release();
    throw err;
  }
  return { engine, skipped };
}

export { flatBatch, flatPredict, sampleSize, LOGITS } from './engine.js';
export type {
  StudentEngine,
  EngineName,
  BatchLoss,
  StepOptions,
  StepResult,
  StoredInput,
  StudentBatch,
  TensorSpec,
  TensorData,
  TensorDtype,
  TensorArray,
} from './engine.js';
