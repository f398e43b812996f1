/**
 * What a hint loss is: a loss between a student tensor and a stored teacher feature (the cache's
 * `features`), one file each, written against the ops so both engines run the same definition,
 * listed in one table (registry.ts). A hint either compares the student's tensor through a
 * trainer-made regressor (a 1×1 convolution for maps, a linear layer for vectors; part of the
 * training graph, dropped from student.onnx) or reads it as it is.
 */
import type { z } from 'zod';
import type { Ops, Rows } from '../ops.js';

export interface HintInputs<T> {
  /** [N, …] the student's side: its tensor, or the regressor's output (same shape as the teacher's). */
  readonly student: T;
  /** [N, …] the teacher's stored feature. */
  readonly teacher: T;
  /** The rows in the mean (rows with teacher targets). */
  readonly rows: Rows<T>;
}

export interface HintLoss<P> {
  readonly params: z.ZodType<P, unknown>;
  readonly reference: string;
  /**
   * What stands between the student's tensor and the loss: `regressor` maps it to the teacher's
   * shape (a 1×1 convolution of [C, H, W] maps with the same H, W, or a linear layer of vectors);
   * `none` compares them as they are (the loss itself must handle differing channels).
   */
  readonly student: 'regressor' | 'none';
  loss<T>(o: Ops<T>, x: HintInputs<T>, params: P): T;
}

export function defineHint<P>(h: HintLoss<P>): HintLoss<P> {
  return h;
}
