/**
 * `distill: { method, params }`, derived from the method table (registry.ts): the recipe's
 * schema, its type, and the one place a recipe's choice becomes a loss.
 */
import { z } from 'zod';
import { distillMethods } from './registry.js';
import { hintLosses, type HintName } from './hints/registry.js';
import type { DistillInputs, LossMethod } from './method.js';
import type { Ops } from './ops.js';

type Methods = typeof distillMethods;
export type MethodName = keyof Methods;
type ParamsOf<M> = M extends LossMethod<infer P> ? P : never;

/**
 * One hint (`distill.hints[]`): a student tensor against a teacher feature stored in the cache,
 * by a hint loss of the table (hints/registry.ts), weighted. `params` are the loss's own.
 */
export const HintSchema = z
  .object({
    /** A tensor of the student graph (a node output; an unknown name is refused with the student's tensors). */
    student: z.string().min(1),
    /** The teacher tensor, as the cache's manifest names it among its `features`. */
    teacher: z.string().min(1),
    loss: z.enum(Object.keys(hintLosses) as [HintName, ...HintName[]]),
    weight: z.number().nonnegative().finite().default(1),
    params: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();
export type Hint = z.infer<typeof HintSchema>;

/** A parsed `distill` block: scratch, or a method of the table with its params (defaults filled in); either may carry hints. */
export type Distill = (
  | { readonly method: 'scratch'; readonly params: Readonly<Record<string, never>> }
  | { [K in MethodName]: { readonly method: K; readonly params: ParamsOf<Methods[K]> } }[MethodName]
) & { readonly hints?: readonly Hint[] };
/** What a recipe may write: params may be left out or partial (defaults apply). */
export type DistillInput = (
  | { readonly method: 'scratch'; readonly params?: Readonly<Record<string, never>> }
  | { readonly method: MethodName; readonly params?: Readonly<Record<string, unknown>> }
) & { readonly hints?: readonly z.input<typeof HintSchema>[] };

export const METHOD_NAMES = Object.keys(distillMethods) as MethodName[];

const hints = z.array(HintSchema).min(1).optional();
const scratch = z.object({ method: z.literal('scratch'), params: z.object({}).strict().prefault({}), hints }).strict();
const methods = Object.entries(distillMethods).map(([name, m]) => z.object({ method: z.literal(name), params: m.params.prefault({}), hints }).strict());

/**
 * The schema of `distill`. Built from the table, so TypeScript cannot see that each literal
 * goes with its own params; the type is asserted once here (Distill, derived from the same table).
 */
export const DistillSchema = z.discriminatedUnion('method', [scratch, ...methods]) as unknown as z.ZodType<Distill, DistillInput>;

/** The method's loss with its params bound (parsed again by the method's own schema). */
export function distillLoss(d: Exclude<Distill, { method: 'scratch' }>): <T>(o: Ops<T>, x: DistillInputs<T>) => T {
  const method: LossMethod<{ readonly temperature: number }> = distillMethods[d.method];
  const params = method.params.parse(d.params);
  return (o, x) => method.loss(o, x, params);
}

/** Whether the method reads labels. */
export const usesLabels = (d: Distill): boolean => d.method !== 'scratch' && distillMethods[d.method].usesLabels;

/** The distillation temperature (1 for scratch). */
export const temperatureOf = (d: Distill): number => (d.method === 'scratch' ? 1 : d.params.temperature);
