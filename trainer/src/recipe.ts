/**
 * Recipes: declarative training runs (YAML or JSON), validated here and frozen after CLI
 * overrides. The distillation method is `distill: { method, params }`, a discriminated union;
 * every method's params use the same names (temperature, alpha, beta, gamma).
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ViewAugmentSchema, ViewSpecSchema } from '@distillate/shared';
import { DistillSchema, type Distill } from './losses/index.js';

const Temperature = z.number().positive().finite();

export { DistillSchema, type Distill } from './losses/index.js';
export type Method = Distill['method'];

export const StudentSchema = z.discriminatedUnion('kind', [
  z
    .object({ kind: z.literal('mlp'), hidden: z.array(z.number().int().positive()).default([256, 128]), dropout: z.number().min(0).max(0.9).default(0) })
    .strict(),
  z
    .object({
      kind: z.literal('cnn'),
      blocks: z
        .array(z.object({ filters: z.number().int().positive(), kernel: z.number().int().positive().default(3), pool: z.boolean().default(true) }).strict())
        .min(1),
      dense: z.array(z.number().int().positive()).default([128]),
    })
    .strict(),
  z
    .object({
      kind: z.literal('resnet'),
      widths: z.array(z.number().int().positive()).min(1).default([16, 32]),
      blocksPerStage: z.number().int().positive().default(1),
    })
    .strict(),
  z.object({ kind: z.literal('layers'), path: z.string().min(1) }).strict(),
  /** A decoder-only, pre-norm, causal transformer for token datasets (lm/transformer.ts); `context` is the block length. */
  z
    .object({
      kind: z.literal('transformer'),
      layers: z.number().int().positive().default(2),
      dModel: z.number().int().positive().default(128),
      heads: z.number().int().positive().default(4),
      ffn: z.number().int().positive().default(512),
      context: z.number().int().min(2),
    })
    .strict(),
  /** Any ONNX model whose ops the ORT engine has gradient rules for (e.g. from torch.onnx.export). */
  z.object({ kind: z.literal('onnx'), path: z.string().min(1) }).strict(),
]);
export type StudentSpec = z.infer<typeof StudentSchema>;

export const RecipeSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only'),
    data: z.object({ train: z.string().min(1), test: z.string().min(1).optional() }).strict(),
    /**
     * Logit caches: a directory ({ cache }), or a teacher name ({ teacher }) resolved in `caches` to
     * that teacher's cache over data.train. Several with the same classes are averaged; different
     * class lists are matched subset by subset. { onnx: model.onnx } instead runs that teacher
     * online, on every batch (no cache; it must be the only teacher).
     */
    teachers: z
      .array(
        z.union([
          z.object({ cache: z.string().min(1) }).strict(),
          z.object({ teacher: z.string().min(1), views: ViewSpecSchema.optional() }).strict(),
          z.object({ onnx: z.string().min(1) }).strict(),
        ]),
      )
      .default([]),
    /**
     * Teachers with different class lists. 'subsets': each teacher is matched against the
     * student's softmax renormalised over its classes (multiTeacherLoss). 'merged': for disjoint
     * class lists, the teachers' logits are concatenated into one distribution over the union, so
     * each teacher's share of the mass is ∝ exp(logsumexp(z/T)) (its energy score), which tells
     * the student, without labels, which teacher an input belongs to. 'balanced': 'merged' after
     * rescaling each teacher's logits to a common spread and adding one offset per class, both
     * fitted over the caches before training so that the merged teacher gives each class an equal
     * share of the transfer set (or the shares in `unionPrior`): separately trained teachers' logit
     * scales are not comparable, and this is a correction that needs no labels (union-balance.ts).
     * 'merged' and 'balanced' need disjoint class lists and distill.method kd. Left out: 'balanced'
     * for disjoint lists distilled with kd (the best measured mode), else 'subsets'.
     */
    union: z.enum(['subsets', 'merged', 'balanced']).optional(),
    /** union: balanced — the class shares of the transfer set, in the union's class order (uniform if absent). */
    unionPrior: z.array(z.number().positive()).min(2).optional(),
    /** Cache root where teacher names are looked up (the server's --cache). */
    caches: z.string().min(1).default('cache'),
    student: StudentSchema,
    distill: DistillSchema.prefault({ method: 'scratch' }),
    /** Loss weights: total = ce·CE + kd·(distillation term, after warm-up). */
    weights: z
      .object({ ce: z.number().min(0).default(1), kd: z.number().min(0).default(1) })
      .strict()
      .default({ ce: 1, kd: 1 }),
    /** DKD-style linear warm-up of the kd weight over this many epochs. */
    warmupEpochs: z.number().min(0).default(0),
    optimizer: z
      .discriminatedUnion('kind', [
        z
          .object({
            kind: z.literal('sgd'),
            lr: z.number().positive().default(0.05),
            momentum: z.number().min(0).max(1).default(0.9),
            weightDecay: z.number().min(0).default(0),
          })
          .strict(),
        z.object({ kind: z.literal('adam'), lr: z.number().positive().default(1e-3), weightDecay: z.number().min(0).default(0) }).strict(),
        z.object({ kind: z.literal('adamw'), lr: z.number().positive().default(1e-3), weightDecay: z.number().min(0).default(0.01) }).strict(),
      ])
      .default({ kind: 'adam', lr: 1e-3, weightDecay: 0 }),
    schedule: z
      .discriminatedUnion('kind', [
        z.object({ kind: z.literal('constant') }).strict(),
        z.object({ kind: z.literal('cosine'), minLr: z.number().min(0).default(0) }).strict(),
        z.object({ kind: z.literal('step'), everyEpochs: z.number().int().positive(), gamma: z.number().positive().default(0.1) }).strict(),
      ])
      .default({ kind: 'constant' }),
    epochs: z.number().int().positive().default(10),
    batchSize: z.number().int().positive().default(128),
    seed: z.number().int().default(1),
    /** Rows held by the shuffle buffer (bounded memory). */
    shuffleBuffer: z.number().int().positive().default(8192),
    /** Semi-supervised: a pool labelled by a label job (pseudo-labels + soft logits). */
    semi: z
      .object({
        pool: z.string().min(1),
        /** The label job's cache over the pool: a directory, or give `teacher` to look it up in `caches`. */
        cache: z.string().min(1).optional(),
        teacher: z.string().min(1).optional(),
        threshold: z.number().min(0).max(1).default(0),
        targets: z.enum(['soft', 'hard']).default('soft'),
      })
      .strict()
      .optional(),
    /**
     * Fresh augmented views every epoch: each training image is shifted (zero fill) and flipped
     * anew, drawn from (seed, image id, epoch) by shared's view code, so a run is reproducible and
     * the transforms are exactly those a view cache stores (epoch e uses view e − 1 of a view cache
     * with the same seed). For scratch and for an online teacher, which then sees the view the
     * student sees. Not with cached teachers, semi or selfDistill: their logits belong to the clean
     * images (a view cache stores logits per view instead).
     */
    augment: ViewAugmentSchema.extend({ seed: z.number().int().min(0).max(0xffffffff).optional() })
      .strict()
      .optional(),
    /** Self-distillation: at this epoch the student's snapshot becomes the teacher for the remaining epochs. */
    selfDistill: z
      .object({ fromEpoch: z.number().int().positive(), temperature: Temperature.default(4) })
      .strict()
      .optional(),
    /**
     * Post-hoc temperature scaling: after training, one temperature τ is fitted on this labelled
     * dataset (held out from training) to minimise the NLL, and folded into the student's last
     * layer, so the saved and exported models give calibrated probabilities; predictions do not
     * change. Its classes must be the student's.
     */
    calibration: z
      .object({ data: z.string().min(1) })
      .strict()
      .optional(),
    out: z.string().default('runs'),
    /**
     * What trains the student. 'ort' (default): the train step as ONNX graphs in onnxruntime-node
     * (CUDA EP, then WebGPU on a real GPU, then CPU; `executionProvider` or DISTILLATE_EP forces
     * one). 'tfjs': TF.js, for users of tfjs-node-gpu (`backend` forces a TF.js backend).
     */
    engine: z.enum(['ort', 'tfjs']).default('ort'),
    /**
     * ORT engine: train steps per session run (the step graph looped K times in ONNX). Copying
     * the weights and optimizer state out of ORT then happens once per K steps; the steps, and so
     * the results, are the same for any K. Fewer when K batches' inputs would pass 64 MiB (large
     * images): a run holds its batches and their stacked copy.
     */
    stepsPerRun: z.number().int().min(1).max(256).default(32),
    executionProvider: z.enum(['cuda', 'webgpu', 'cpu']).optional(),
    /**
     * ORT engine: threads for one operator (ORT's intra-op pool), for the train step and the
     * online teacher. Default: DISTILLATE_THREADS, else every core this process may use. Give
     * fewer when several trainings share the machine.
     */
    threads: z.number().int().positive().optional(),
    backend: z.enum(['tensorflow', 'webgpu', 'wasm', 'cpu']).optional(),
  })
  .strict();
export type Recipe = z.infer<typeof RecipeSchema>;
export type RecipeInput = z.input<typeof RecipeSchema>;

export class RecipeError extends Error {
  override readonly name = 'RecipeError';
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let o: Record<string, unknown> = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[keys.at(-1)!] = value;
}

/** `key.path=value`; the value is parsed as YAML (numbers, booleans, lists work). */
export function applyOverrides(raw: Record<string, unknown>, overrides: readonly string[]): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const o of overrides) {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new RecipeError(`override "${o}" is not key=value`);
    setPath(out, o.slice(0, eq), parseYaml(o.slice(eq + 1)));
  }
  return out;
}

function deepFreeze<T>(o: T): Readonly<T> {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Validate (with overrides applied first) and freeze. */
export function parseRecipe(raw: unknown, overrides: readonly string[] = [], source = 'recipe'): Readonly<Recipe> {
  if (typeof raw !== 'object' || raw === null) throw new RecipeError(`${source}: not an object`);
  const r = RecipeSchema.safeParse(applyOverrides(raw as Record<string, unknown>, overrides));
  if (!r.success) throw new RecipeError(`${source}: ${r.error.issues.map((i) => `${i.path.join('.') || 'root'}: ${i.message}`).join('; ')}`);
  if (r.data.teachers.some((t) => 'onnx' in t) && (r.data.teachers.length > 1 || r.data.semi !== undefined || r.data.selfDistill !== undefined)) {
    throw new RecipeError(`${source}: an online teacher ({ onnx }) must be the only teacher, without semi or selfDistill`);
  }
  if (r.data.augment !== undefined && (r.data.teachers.some((t) => !('onnx' in t)) || r.data.semi !== undefined || r.data.selfDistill !== undefined)) {
    throw new RecipeError(
      `${source}: augment draws fresh views each epoch, but cached logits belong to the clean images; use a view cache (teachers: [{ teacher, views }]) or an online teacher ({ onnx })`,
    );
  }
  if (r.data.semi !== undefined && (r.data.semi.cache === undefined) === (r.data.semi.teacher === undefined)) {
    throw new RecipeError(`${source}: semi needs exactly one of cache (a directory) or teacher (a name looked up in caches)`);
  }
  if (r.data.distill.method !== 'scratch' && r.data.teachers.length === 0 && r.data.selfDistill === undefined && r.data.semi === undefined) {
    throw new RecipeError(`${source}: distill.method ${r.data.distill.method} needs at least one entry in teachers (or semi / selfDistill)`);
  }
  return deepFreeze(r.data);
}

export async function loadRecipe(path: string, overrides: readonly string[] = []): Promise<Readonly<Recipe>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new RecipeError(`${path}: cannot read recipe`);
  }
  let raw: unknown;
  try {
    raw = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new RecipeError(`${path}: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseRecipe(raw, overrides, path);
}
