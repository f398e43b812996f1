/**
 * `distill: { method, params }`, derived from the method table (registry.ts): the recipe's
 * schema, its type, and the one place a recipe's choice becomes a loss.
 */
import { z } from 'zod';
import { distillMethods } from './registry.js';
import type { DistillInputs, LossMethod } from './method.js';
import type { Ops } from './ops.js';

type Methods = typeof distillMethods;
export type MethodName = keyof Methods;
type ParamsOf<M> = M extends LossMethod<infer P> ? P : never;

/** A parsed `distill` block: scratch, or a method of the table with its params (defaults filled in). */
export type Distill =
  | { readonly method: 'scratch'; readonly params: Readonly<Record<string, never>> }
  | { [K in MethodName]: { readonly method: K; readonly params: ParamsOf<Methods[K]> } }[MethodName];
/** What a recipe may write: params may be left out or partial (defaults apply). */
export type DistillInput =
  | { readonly method: 'scratch'; readonly params?: Readonly<Record<string, never>> }
  | { readonly method: MethodName; readonly params?: Readonly<Record<string, unknown>> };

export const METHOD_NAMES = Object.keys(distillMethods) as MethodName[];

const scratch = z.object({ method: z.literal('scratch'), params: z.object({}).strict().prefault({}) }).strict();
const methods = Object.entries(distillMethods).map(([name, m]) => z.object({ method: z.literal(name), params: m.params.prefault({}) }).strict());

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
