/**
 * What a distillation method is: one zod schema for its params and one function of the
 * student's and teacher's logits, written against the ops (ops.ts) so that both engines run the
 * same definition. Methods are listed in one table (registry.ts).
 */
import { z } from 'zod';
import type { Ops, Rows } from './ops.js';

/** What a method sees of a batch. Means over rows run over `rows` (the rows with a teacher). */
export interface DistillInputs<T> {
  /** [N, C] student logits. */
  readonly student: T;
  /** [N, C] teacher logits z, not yet divided by the temperature. */
  readonly teacher: T;
  /** [N, C] one-hot labels; a zero row where a row has no label. */
  readonly target: T;
  readonly classes: number;
  readonly rows: Rows<T>;
}

export interface LossMethod<P extends { readonly temperature: number }> {
  /** Its params, with their defaults; every method has a temperature. */
  readonly params: z.ZodType<P, unknown>;
  /** The paper or equation it implements (documentation: the file says more). */
  readonly reference: string;
  /** Whether the loss reads `target` (labels). */
  readonly usesLabels: boolean;
  /** The loss, a scalar. */
  loss<T>(o: Ops<T>, x: DistillInputs<T>, params: P): T;
}

/** Identity with inference: `defineLoss({...})` types `loss`'s params from the schema. */
export function defineLoss<P extends { readonly temperature: number }>(m: LossMethod<P>): LossMethod<P> {
  return m;
}

/** The temperature every method takes: positive and finite. */
export const Temperature = z.number().positive().finite();
